"""The foreign key spaces' processor (streams.processors.keyspace), without Kafka: the state
and messages of one key in, the state, the answers and the key's next wake-up out."""

from __future__ import annotations

import json
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from streams.messages import LocationPart, ReadingChanged, Subscribe, Unsubscribe
from streams.processors.keyspace import KeySpaceProcessor, PartTooLarge
from streams.processors.step import Out
from streams.state import LocationState
from streams.topology import space_partition
from tests.unit.test_state import NOW, reading, v

WINDOW = timedelta(milliseconds=250)
PARTITIONS = 4


def processor(max_part_bytes: int = 1_000_000) -> KeySpaceProcessor:
    return KeySpaceProcessor(
        space="location",
        cls=LocationState,
        partitions=PARTITIONS,
        window=WINDOW,
        max_part_bytes=max_part_bytes,
        reading_history=4,
    )


def answered(step_messages: list[Out]) -> dict[int, list[str]]:
    """The bookings each message answers, by its partition."""
    out: dict[int, list[str]] = {}
    for m in step_messages:
        assert m.to == "booking" and m.value is not None and m.partition is not None
        out.setdefault(m.partition, []).extend(json.loads(m.value)["bookings"])
    return out


def change(location: str, rid: int, version: int) -> ReadingChanged:
    return ReadingChanged(deleted=False, version=v(version), row=reading(UUID(location), rid))


def test_a_new_subscriber_is_answered_at_the_end_of_its_batch_and_alone() -> None:
    p, key, state = processor(), str(uuid4()), LocationState()
    old = str(uuid4())
    assert not p.apply(state, Subscribe(booking_id=old), NOW)
    p.flush(key, state, NOW, changed=False)  # answered then
    new = str(uuid4())
    assert not p.apply(state, Subscribe(booking_id=new), NOW + WINDOW)
    step = p.flush(key, state, NOW + WINDOW, changed=False)
    assert answered(step.messages) == {space_partition("booking", new, PARTITIONS): [new]}
    assert step.due is None and state.outbox.fresh == []


def test_a_subscriber_gone_before_the_end_of_its_batch_is_not_answered() -> None:
    p, key, state = processor(), str(uuid4()), LocationState()
    b = str(uuid4())
    p.apply(state, Subscribe(booking_id=b), NOW)
    p.apply(state, Unsubscribe(booking_id=b), NOW)
    step = p.flush(key, state, NOW, changed=False)
    assert step.messages == [] and step.due is None


def test_changes_within_a_window_are_answered_once_with_the_newest_content() -> None:
    p, key, state = processor(), str(uuid4()), LocationState()
    subscribers = [str(uuid4()) for _ in range(12)]
    for b in subscribers:
        p.apply(state, Subscribe(booking_id=b), NOW)
    p.flush(key, state, NOW, changed=False)
    assert p.apply(state, change(key, 1, 10), NOW)
    first = p.flush(key, state, NOW, changed=True)
    assert sorted(b for ids in answered(first.messages).values() for b in ids) == sorted(
        subscribers
    )
    assert first.due is None and state.outbox.sent_at == NOW

    # Two more changes inside the window: nothing leaves, the key wakes when it ends.
    soon = NOW + WINDOW / 5
    assert p.apply(state, change(key, 2, 11), soon)
    assert p.apply(state, change(key, 3, 12), soon)
    held = p.flush(key, state, soon, changed=True)
    assert held.messages == [] and held.due == NOW + WINDOW

    late = p.flush(key, state, NOW + WINDOW, changed=False)
    by_partition = answered(late.messages)
    assert sorted(b for ids in by_partition.values() for b in ids) == sorted(subscribers)
    for partition, ids in by_partition.items():
        assert {space_partition("booking", b, PARTITIONS) for b in ids} == {partition}
    part = LocationPart.model_validate_json(late.messages[0].value or b"")
    assert {r.id for r in part.readings} == {3}  # the newest reading of the sensor
    assert late.due is None


def test_a_duplicate_change_opens_no_window() -> None:
    p, key, state = processor(), str(uuid4()), LocationState()
    assert p.apply(state, change(key, 1, 10), NOW)
    p.flush(key, state, NOW, changed=True)
    assert not p.apply(state, change(key, 1, 10), NOW + WINDOW)
    assert state.outbox.due is None


def test_a_part_over_its_bound_is_refused_and_retry_keeps_what_fits() -> None:
    p, key = processor(max_part_bytes=700), str(uuid4())
    state = LocationState()
    small = change(key, 1, 10)
    p.apply(state, small, NOW)
    p.flush(key, state, NOW, changed=True)  # fits
    others = [
        ReadingChanged(
            deleted=False,
            version=v(20 + i),
            row=reading(small.row.location_id, 100 + i, sensor=f"s{i}"),
        )
        for i in range(8)
    ]
    trial = state.model_copy(deep=True)
    for msg in others:
        p.apply(trial, msg, NOW)
    with pytest.raises(PartTooLarge):
        p.flush(key, trial, NOW, changed=True)
    kept, refused = p.retry(key, state, others, NOW)
    assert refused and all("MIS_MAX_PART_BYTES" in reason for _, reason in refused)
    assert isinstance(kept, LocationState)
    assert 0 < len(kept.part(key).readings) < 1 + len(others)
    p.fits(key, kept, NOW, with_state=True)  # what is kept fits
