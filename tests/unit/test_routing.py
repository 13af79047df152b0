"""Debezium change events -> key-space messages, over the captured events in tests/data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.envelope import make_version
from streams.errors import BadEvent
from streams.messages import BookingChanged, CertificateChanged, PestChanged, ReadingChanged
from streams.routing import route, table_of

DATA = Path(__file__).resolve().parents[1] / "data"
SPACE = {
    "storage_bookings": ("booking", "id"),
    "crop_inspections": ("inspection", "id"),
    "sensor_readings": ("location", "location_id"),
    "pest_detections": ("location", "location_id"),
    "certificates": ("vendor", "vendor_id"),
}


def records(table: str) -> list[dict[str, Any]]:
    return [r for r in json.loads((DATA / f"{table}.json").read_text()) if r["value"] is not None]


@pytest.mark.parametrize("table", sorted(SPACE))
def test_every_captured_event_goes_to_its_key_space(table: str) -> None:
    space, fk = SPACE[table]
    for record in records(table):
        value = record["value"]
        routed = route(table_of(record["topic"]), json.dumps(value).encode())
        row = value["before"] if value["op"] == "d" else value["after"]
        moved = value["op"] == "u" and value["before"][fk] != value["after"][fk]
        assert [(s, k) for s, k, _ in routed][-1] == (space, str(row[fk]))
        assert len(routed) == (2 if moved else 1)
        message = routed[-1][2]
        assert message.deleted is (value["op"] == "d")  # type: ignore[attr-defined]
        seq = json.loads(value["source"]["sequence"])
        assert message.version == make_version(int(seq[0] or 0), int(seq[1]))  # type: ignore[attr-defined]


def _event(op: str, before: dict | None, after: dict | None, seq: str = '["10","20"]') -> bytes:
    return json.dumps(
        {"op": op, "before": before, "after": after, "source": {"lsn": 20, "sequence": seq}}
    ).encode()


CERT = {"id": "6f1c2a9e-3b4d-4c5e-8f70-112233445566", "type": "organic", "status": "valid"}


def test_a_row_whose_foreign_key_changes_leaves_the_old_key() -> None:
    before = {**CERT, "vendor_id": "11111111-1111-4111-8111-111111111111"}
    after = {**CERT, "vendor_id": "22222222-2222-4222-8222-222222222222"}
    routed = route("certificates", _event("u", before, after))
    assert [(s, k) for s, k, _ in routed] == [
        ("vendor", before["vendor_id"]),
        ("vendor", after["vendor_id"]),
    ]
    leave, join = routed[0][2], routed[1][2]
    assert isinstance(leave, CertificateChanged) and leave.deleted
    assert isinstance(join, CertificateChanged) and not join.deleted


def test_the_version_follows_the_stream_order_not_the_change_lsn() -> None:
    reading = {
        "id": 7,
        "location_id": "33333333-3333-4333-8333-333333333333",
        "sensor_id": "t",
        "sensor_type": "temperature",
        "value": 1.0,
        "unit": "C",
        "reading_time": "2026-11-20T10:00:00Z",
    }
    early_commit = route("sensor_readings", _event("c", None, reading, '["100","900"]'))[0][2]
    late_commit = route("sensor_readings", _event("c", None, reading, '["200","150"]'))[0][2]
    assert isinstance(early_commit, ReadingChanged) and isinstance(late_commit, ReadingChanged)
    assert early_commit.version < late_commit.version


@pytest.mark.parametrize(
    ("table", "value", "reason"),
    [
        ("storage_bookings", b"{not json", "Invalid JSON"),
        ("storage_bookings", _event("c", None, None), "'c' event without 'after'"),
        ("pest_detections", _event("d", None, None), "without 'before'"),
        ("sensor_readings", _event("c", None, {"id": 1}), "location_id"),
        ("certificates", _event("c", None, {**CERT, "vendor_id": "nope"}), "vendor_id"),
        ("storage_bookings", _event("x", None, None), "op"),
        ("sensor_readings", _event("c", None, {}, seq='["a"'), "after"),
        ("unknown_table", _event("c", None, {}), "no route"),
    ],
)
def test_unreadable_events_are_bad_events_with_a_reason(
    table: str, value: bytes, reason: str
) -> None:
    with pytest.raises(BadEvent, match=reason):
        route(table, value)


def test_messages_round_trip_through_their_topic_codec() -> None:
    from streams.messages import BOOKING_MSG, LOCATION_MSG, encode

    booking = records("storage_bookings")[0]["value"]
    ((_, _, msg),) = route("storage_bookings", json.dumps(booking).encode())
    assert isinstance(msg, BookingChanged)
    assert BOOKING_MSG.validate_json(encode(msg)) == msg
    pest = records("pest_detections")[0]["value"]
    ((_, _, pmsg),) = route("pest_detections", json.dumps(pest).encode())
    assert isinstance(pmsg, PestChanged)
    assert LOCATION_MSG.validate_json(encode(pmsg)) == pmsg
