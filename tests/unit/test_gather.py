"""Readings gathered per location (streams.gather): what the location agent gets instead of
Debezium's events one by one must be the same changes, per location in the same order."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from streams.gather import gather, gathered_value, held_back
from streams.messages import LOCATION_MSG, Gathered, ReadingChanged, Truncated, encode
from streams.routing import BROADCAST, route

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURED = [
    r for r in json.loads((DATA / "sensor_readings.json").read_text()) if r["value"] is not None
]
A = "c3e5a7b9-1d2f-4e6a-8b0c-2d4f6a8b0c11"
B = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"


def reading(
    rid: int, location: str, lsn: int, op: str = "c", before: dict[str, Any] | None = None
) -> bytes:
    event = copy.deepcopy(CAPTURED[0]["value"])
    row = {**event["after"], "id": rid, "location_id": location, "value": float(rid)}
    event.update(op=op, before=before, after=None if op == "d" else row)
    if op == "d":
        event["before"] = row
    event["source"].update(lsn=lsn, sequence=json.dumps([str(lsn), str(lsn)]))
    return json.dumps(event).encode()


def truncate(lsn: int) -> bytes:
    event = copy.deepcopy(CAPTURED[0]["value"])
    event.update(op="t", before=None, after=None)
    event["source"].update(lsn=lsn, sequence=json.dumps([str(lsn), str(lsn)]))
    return json.dumps(event).encode()


def decoded(value: bytes) -> Any:
    return LOCATION_MSG.validate_json(value)


def one_by_one(values: list[bytes]) -> dict[str, list[Any]]:
    """What routing each event on its own gives every key, in order."""
    per_key: dict[str, list[Any]] = {}
    for value in values:
        for _, key, message in route("sensor_readings", value):
            per_key.setdefault(key, []).append(message)
    return per_key


def test_the_captured_events_reach_each_location_as_they_would_one_by_one() -> None:
    values = [json.dumps(r["value"]).encode() for r in CAPTURED]
    records = [
        ("sensor_readings", v, r["timestamp"]) for v, r in zip(values, CAPTURED, strict=True)
    ]
    result = gather(records)
    assert not result.bad
    got: dict[str, list[Any]] = {}
    for out in result.out:
        assert out.space == "location"
        msg = decoded(out.value)
        assert isinstance(msg, Gathered) and len(msg.changes) == out.changes
        got.setdefault(out.key, []).extend(msg.changes)
    assert got == one_by_one(values)
    # One message per location: far fewer messages than events.
    assert len(result.out) == len(got) < len(values)


def test_a_location_gets_one_message_with_its_changes_in_order_and_the_oldest_timestamp() -> None:
    records = [
        ("sensor_readings", reading(1, A, 10), 1_000),
        ("sensor_readings", reading(2, B, 11), 999),
        ("sensor_readings", reading(3, A, 12), 1_002),
        ("sensor_readings", reading(1, A, 13, op="d"), 1_003),
    ]
    result = gather(records)
    by_key = {o.key: o for o in result.out}
    assert sorted(by_key) == sorted([A, B])
    a = decoded(by_key[A].value)
    assert [(c.row.id, c.deleted) for c in a.changes] == [(1, False), (3, False), (1, True)]
    assert by_key[A].timestamp_ms == 1_000 and by_key[B].timestamp_ms == 999


def test_a_gathered_message_is_the_json_pydantic_writes_for_it() -> None:
    """The gatherer joins the JSON of each change instead of keeping their models until the
    read is sent; what it writes is byte for byte what encoding the model would give."""
    records = [("sensor_readings", reading(n, A, 10 + n), 1_000 + n) for n in range(1, 5)]
    (out,) = gather(records).out
    msg = decoded(out.value)
    assert isinstance(msg, Gathered)
    assert out.value == encode(Gathered(changes=msg.changes))
    assert gathered_value([]) == encode(Gathered(changes=[]))


def test_a_reading_that_moved_leaves_its_old_location_and_joins_the_new_one() -> None:
    old = {**CAPTURED[0]["value"]["after"], "id": 5, "location_id": A}
    moved = reading(5, B, 20, op="u", before=old)
    result = gather([("sensor_readings", moved, None)])
    changes = {o.key: decoded(o.value).changes for o in result.out}
    assert [(c.row.id, c.deleted) for c in changes[A]] == [(5, True)]
    assert [(c.row.id, c.deleted) for c in changes[B]] == [(5, False)]


def test_an_unreadable_event_is_reported_and_the_others_go_on() -> None:
    records = [
        ("sensor_readings", reading(1, A, 10), None),
        ("sensor_readings", b'{"op": "c", "after": {"id": 1}', None),
        ("sensor_readings", None, None),  # the tombstone after a delete: nothing to gather
        ("sensor_readings", reading(2, A, 11), None),
    ]
    result = gather(records)
    assert [b.index for b in result.bad] == [1]
    assert "sensor_readings" in result.bad[0].reason
    (out,) = result.out
    assert [c.row.id for c in decoded(out.value).changes] == [1, 2]


def test_a_truncate_leaves_after_what_was_read_before_it_and_before_what_follows() -> None:
    records = [
        ("sensor_readings", reading(1, A, 10), None),
        ("sensor_readings", truncate(11), None),
        ("sensor_readings", reading(2, A, 12), None),
    ]
    result = gather(records)
    assert [o.key for o in result.out] == [A, BROADCAST, A]
    first, marker, after = (decoded(o.value) for o in result.out)
    assert isinstance(marker, Truncated) and marker.table == "sensor_readings"
    assert [c.row.id for c in first.changes] == [1]
    assert [c.row.id for c in after.changes] == [2]


def test_a_large_read_is_split_into_messages_of_at_most_max_changes() -> None:
    records = [("sensor_readings", reading(i, A, 100 + i), None) for i in range(7)]
    result = gather(records, max_changes=3)
    assert [o.changes for o in result.out] == [3, 3, 1]
    ids = [c.row.id for o in result.out for c in decoded(o.value).changes]
    assert ids == list(range(7))
    assert all(isinstance(c, ReadingChanged) for o in result.out for c in decoded(o.value).changes)


def test_a_partition_is_held_back_while_its_location_partition_queues_over_the_limit() -> None:
    assigned = [("sg.public.sensor_readings", 0), ("sg.public.sensor_readings", 2)]
    assert held_back(assigned, {0: 1001, 2: 1000, 1: 5000}, 1000) == {assigned[0]}
    assert held_back(assigned, {}, 1000) == set()  # nothing known: nothing held
