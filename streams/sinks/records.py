"""A market_inventory_snapshots row read back as the SnapshotRecord the sink wrote.

The publisher takes SnapshotRecords; rebuilding one from the row lets any process (the HTTP API
of any worker) publish what Postgres holds, without the worker that built the snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.snapshot import Snapshot, SnapshotRecord

SNAPSHOT_FIELDS = tuple(Snapshot.model_fields)


def snapshot_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    values = {name: row[name] for name in SNAPSHOT_FIELDS}
    # char(64) and text[] come back as str and list; numeric(5,2) as Decimal, which pydantic
    # turns into the float the builder made.
    values["certification_types"] = list(values["certification_types"] or [])
    return values


def record_from_row(row: Mapping[str, Any]) -> SnapshotRecord:
    return SnapshotRecord(
        snapshot=Snapshot.model_validate(snapshot_fields(row)),
        source_version=row["source_version"],
        evaluated_at=row["evaluated_at"],
        content_hash=row["content_hash"],
    )
