"""The JSON Schema of the snapshot topic's value, for downstream consumers.

``python -m schemas.jsonschema`` rewrites ``schemas/snapshot-record.schema.json`` from the
pydantic model; a unit test fails when the committed file and the model disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.snapshot import SnapshotRecord

SCHEMA_PATH = Path(__file__).resolve().parent / "snapshot-record.schema.json"


def snapshot_record_schema() -> dict[str, Any]:
    schema = SnapshotRecord.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "market-snapshots/snapshot-record.schema.json",
        "description": (
            "Value of the compacted snapshot topic <MIS_APP_ID>-snapshots, keyed by booking_id "
            "(a null value is a tombstone: the snapshot was deleted)."
        ),
        **schema,
    }


def render() -> str:
    return json.dumps(snapshot_record_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
