"""A subset of the fault matrix (tests/faults/matrix.py, `make faults` runs all of it).

Each fault runs under steady load on the real stack; afterwards every snapshot row and listing of
the load's farmers must equal a recomputation from the source tables (``mis verify``): nothing
lost, nothing regressed, nothing extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings
from tests.faults import matrix

# The TRUNCATE fault is left to `make faults`: it would empty tables the rest of the session reads.
CI_FAULTS: dict[str, dict[str, Any]] = {
    "worker SIGKILL x20 (restart on its data dir)": {"kills": 3},
    "Kafka Connect killed and restarted": {},
    "MongoDB server stopped 60 s": {"down_s": 15.0},
    "sink connections terminated (pg_terminate_backend)": {},
    "duplicated and reordered delivery": {},
    "1,000 malformed events per CDC topic": {"per_topic": 100},
    "column added to every source table": {},
}


@pytest.mark.late(1)
@pytest.mark.parametrize("name", list(CI_FAULTS))
def test_the_pipeline_converges_after(
    name: str, stack: Any, settings: Settings, tmp_path: Path
) -> None:
    outcome = matrix.run(settings, name, tmp_path, rate=10.0, **CI_FAULTS[name])
    assert outcome.report is not None
    findings = "\n".join(f.describe() for f in outcome.report.findings[:20])
    assert outcome.report.clean, f"{outcome.report.summary()}\n{findings}\n{outcome.notes}"
