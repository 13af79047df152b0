"""The JSON Schemas of the snapshot and listing-change topics' values, for consumers.

``python -m schemas.jsonschema`` rewrites ``schemas/snapshot-record.schema.json`` and
``schemas/listing-change.schema.json`` from the pydantic models; a unit test fails when a
committed file and its model disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.changes import ListingChange
from schemas.snapshot import SnapshotRecord

SCHEMA_PATH = Path(__file__).resolve().parent / "snapshot-record.schema.json"
CHANGE_SCHEMA_PATH = Path(__file__).resolve().parent / "listing-change.schema.json"


def _document(model: type[BaseModel], path: Path, description: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"market-snapshots/{path.name}",
        "description": description,
        **model.model_json_schema(mode="serialization"),
    }


def snapshot_record_schema() -> dict[str, Any]:
    return _document(
        SnapshotRecord,
        SCHEMA_PATH,
        "Value of the compacted snapshot topic <MIS_APP_ID>-snapshots, keyed by booking_id "
        "(a null value is a tombstone: the snapshot was deleted).",
    )


def listing_change_schema() -> dict[str, Any]:
    return _document(
        ListingChange,
        CHANGE_SCHEMA_PATH,
        "Value of the topic <MIS_APP_ID>-listing-changes, keyed by booking_id: one "
        "field-level change of a listing, delivered at least once (deduplicate by event_id).",
    )


def render() -> str:
    return json.dumps(snapshot_record_schema(), indent=2, sort_keys=True) + "\n"


def render_changes() -> str:
    return json.dumps(listing_change_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    for path, text in ((SCHEMA_PATH, render()), (CHANGE_SCHEMA_PATH, render_changes())):
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
