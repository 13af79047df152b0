"""Register every connectors/*.json with the running Kafka Connect and wait until it RUNS.

Idempotent (PUT /connectors/{name}/config). `python -m launcher up` does this already; run this
after editing a connector's JSON: `.venv/bin/python connectors/register.py`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# Run as a script, this file's directory is on sys.path, not the repository's.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.connectors import register_all
from launcher.errors import StackError
from streams.config import Settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        register_all(Settings())
    except (StackError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
