"""The stack itself: every source table's change reaches its Debezium topic, and the
MongoDB-wire server stores and returns documents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql
from pymongo.database import Database

from streams.config import Settings
from streams.routing import SPACE_OF_TABLE
from streams.topology import ROUTED_BY, space_partition

if TYPE_CHECKING:
    from tests.integration.conftest import Consume, Record


@dataclass(frozen=True)
class SourceRow:
    table: str
    values: dict[str, Any]
    #: what the `after` image must hold: JSON as Debezium's JsonConverter writes it
    expected_after: dict[str, Any]


def booking() -> SourceRow:
    ids = {k: str(uuid4()) for k in ("id", "farmer_id", "vendor_id", "location_id")}
    values = {
        **ids,
        "crop_type": "maize",
        "grade": "A",
        "quantity_kg": 1200,
        "duration_days": 30,
        "status": "confirmed",
    }
    return SourceRow("storage_bookings", values, values)


def inspection() -> SourceRow:
    values = {
        "id": str(uuid4()),
        "farmer_id": str(uuid4()),
        "crop_type": "tomato",
        "status": "completed",
        "quality_score": "87.50",
        "freshness": "fresh",
        "shelf_life_days": 12,
    }
    # decimal.handling.mode=string: numeric(5,2) arrives as its text, not base64 bytes.
    return SourceRow("crop_inspections", values, values)


def reading() -> SourceRow:
    values = {
        "location_id": str(uuid4()),
        "sensor_id": f"t-{uuid4().hex[:8]}",
        "sensor_type": "temperature",
        "value": 4.25,
        "unit": "C",
        "reading_time": datetime.now(UTC),
        "status": "active",
    }
    expected = {k: v for k, v in values.items() if k != "reading_time"}
    return SourceRow("sensor_readings", values, expected)


def detection() -> SourceRow:
    values = {
        "id": str(uuid4()),
        "location_id": str(uuid4()),
        "pest_type": "weevil",
        "severity": "high",
        "confidence": 0.93,
        "detected_at": datetime.now(UTC),
    }
    expected = {k: v for k, v in values.items() if k != "detected_at"}
    return SourceRow("pest_detections", values, expected)


def certificate() -> SourceRow:
    values = {
        "id": str(uuid4()),
        "vendor_id": str(uuid4()),
        "type": "organic",
        "issuer": "Agro Cert",
        "status": "valid",
        "expiry_date": date(2031, 1, 1),
        "document_url": "https://example.invalid/cert.pdf",
        "score": 91,
    }
    expected = {k: v for k, v in values.items() if k != "expiry_date"}
    return SourceRow("certificates", values, expected)


ROWS: list[Callable[[], SourceRow]] = [booking, inspection, reading, detection, certificate]


def insert(pg: psycopg.Connection, row: SourceRow) -> Any:
    columns = list(row.values)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(row.table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    found = pg.execute(query, [row.values[c] for c in columns]).fetchone()
    assert found is not None
    key = found[0]
    return str(key) if row.table != "sensor_readings" else key


@pytest.mark.parametrize("make_row", ROWS, ids=lambda f: f.__name__)
def test_insert_reaches_its_cdc_topic(
    pg: psycopg.Connection,
    consume: Consume,
    settings: Settings,
    make_row: Callable[[], SourceRow],
) -> None:
    row = make_row()
    row_id = insert(pg, row)

    def is_ours(rec: Record) -> bool:
        after = rec.value.get("after") if isinstance(rec.value, dict) else None
        return isinstance(after, dict) and after.get("id") == row_id

    rec = consume(settings.cdc_topic(row.table), is_ours, timeout_s=45)

    assert rec.value["op"] == "c"
    assert rec.value["before"] is None
    assert rec.value["source"]["table"] == row.table
    # Keyed by the bare id, in the partition of the key space's key: the id for bookings and
    # inspections (murmur2 of the same bytes as the pipeline's own messages), the location or
    # vendor for the others (PartitionRouting's Java hash), where the key's agent reads it.
    assert rec.key == row_id
    space = SPACE_OF_TABLE[row.table]
    placed_by = rec.value["after"][ROUTED_BY[row.table]] if row.table in ROUTED_BY else row_id
    assert rec.partition == space_partition(space, str(placed_by), settings.partitions)
    after = rec.value["after"]
    assert {k: after[k] for k in row.expected_after} == row.expected_after


def test_mongo_wire_round_trip(mongo_db: Database) -> None:
    collection = mongo_db[f"it_stack_{uuid4().hex[:8]}"]
    doc_id = str(uuid4())
    try:
        collection.insert_one({"_id": doc_id, "crop": "maize", "kg": 1200, "tags": ["a", "b"]})
        collection.update_one({"_id": doc_id}, {"$set": {"kg": 1100}})
        assert collection.find_one({"_id": doc_id}) == {
            "_id": doc_id,
            "crop": "maize",
            "kg": 1100,
            "tags": ["a", "b"],
        }
    finally:
        collection.drop()
