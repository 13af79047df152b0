"""The booking processor (streams.processors.booking), without Kafka: a booking's state and
messages in, its state, its subscriptions and snapshots, and its next deadline out."""

from __future__ import annotations

import json
from datetime import timedelta

from schemas.entities import Booking
from schemas.snapshot import SnapshotRecord
from streams.messages import BookingChanged, ReadingChanged
from streams.processors.booking import BookingProcessor
from streams.processors.step import SNAPSHOTS, Out, Step
from streams.state import BookingState, LocationState, Shelf, VendorState
from streams.topology import space_partition
from tests.unit.test_state import NOW, booking, reading, v

WINDOW = timedelta(milliseconds=250)
PARTITIONS = 4
P = BookingProcessor(
    partitions=PARTITIONS,
    window=WINDOW,
    retention=timedelta(days=30),
    ask_again_after=timedelta(seconds=30),
)


def snapshots(step: Step) -> list[SnapshotRecord]:
    return [
        SnapshotRecord.model_validate_json(m.value)
        for m in step.messages
        if m.to == SNAPSHOTS and m.value is not None
    ]


def commands(step: Step) -> list[tuple[str, str, str]]:
    return [
        (m.to, m.key or "", json.loads(m.value or b"{}")["kind"])
        for m in step.messages
        if m.to != SNAPSHOTS
    ]


def answered_booking() -> tuple[str, BookingState, Shelf, Booking]:
    """A booking whose location and vendor have answered, its window open at NOW."""
    b = booking()
    key, state, shelf = str(b.id), BookingState(), Shelf()
    P.booking(key, state, BookingChanged(deleted=False, version=v(10), row=b), NOW)
    location, vendor = (
        LocationState().part(str(b.location_id)),
        VendorState().part(str(b.vendor_id)),
    )
    for part in (location, vendor):
        shelf.offer(part)
    assert P.part(state, "location", location, NOW)
    assert P.part(state, "vendor", vendor, NOW)
    return key, state, shelf, b


def test_a_new_booking_subscribes_at_once_to_its_keys_in_their_partitions() -> None:
    b = booking()
    state = BookingState()
    step = P.booking(str(b.id), state, BookingChanged(deleted=False, version=v(10), row=b), NOW)
    assert commands(step) == [
        ("location", str(b.location_id), "subscribe"),
        ("vendor", str(b.vendor_id), "subscribe"),
    ]
    for m in step.messages:
        assert m.partition == space_partition(m.to, m.key or "", PARTITIONS)
    assert state.outbox.due == NOW
    # Its parts have not answered: the flush emits nothing and wakes it to ask again.
    flushed = P.flush(str(b.id), state, Shelf().get, NOW, owed_again=False)
    assert flushed.evaluated and snapshots(flushed) == []
    assert flushed.wake_at == NOW + P.ask_again_after


def test_a_booking_emits_once_per_window_with_its_newest_content() -> None:
    key, state, shelf, b = answered_booking()
    first = P.flush(key, state, shelf.get, NOW, owed_again=False)
    (record,) = snapshots(first)
    assert record.snapshot.booking_id == b.id
    assert first.due is None

    # Two readings inside the window: held back, the booking due when the window ends.
    loc = LocationState()
    for rid, at in ((1, NOW + WINDOW / 4), (2, NOW + WINDOW / 2)):
        loc.apply_reading(
            ReadingChanged(deleted=False, version=v(10 + rid), row=reading(b.location_id, rid)),
            history=4,
        )
        part = loc.part(str(b.location_id))
        shelf.offer(part)
        assert P.part(state, "location", part, at)
        held = P.flush(key, state, shelf.get, at, owed_again=False)
        assert snapshots(held) == [] and not held.evaluated and held.due == NOW + WINDOW

    late = P.flush(key, state, shelf.get, NOW + WINDOW, owed_again=False)
    (newer,) = snapshots(late)
    assert newer.source_version == v(12)
    # Nothing changed since: nothing is sent, unless the last send is owed again.
    assert P.flush(key, state, shelf.get, NOW + 2 * WINDOW, owed_again=False).messages == []
    P.changed(state, NOW + 3 * WINDOW)
    again = P.flush(key, state, shelf.get, NOW + 3 * WINDOW, owed_again=True)
    assert [r.content_hash for r in snapshots(again)] == [newer.content_hash]


def test_a_finished_booking_past_its_retention_is_evicted_when_flushed() -> None:
    key, state, shelf, b = answered_booking()
    P.flush(key, state, shelf.get, NOW, owed_again=False)
    done = b.model_copy(update={"status": "completed"})
    P.booking(
        key, state, BookingChanged(deleted=False, version=v(11), row=done, committed_at=NOW), NOW
    )
    later = NOW + P.retention
    step = P.flush(key, state, shelf.get, later, owed_again=False)
    assert step.drop and step.evaluated and step.wake_at is None
    assert sorted(commands(step)) == [
        ("location", str(b.location_id), "unsubscribe"),
        ("vendor", str(b.vendor_id), "unsubscribe"),
    ]
    assert step.messages[-1] == Out(SNAPSHOTS, key, None)  # the tombstone


def test_a_live_booking_is_not_evicted_and_an_unknown_one_is_tombstoned_again() -> None:
    key, state, _, _ = answered_booking()
    assert P.evict(key, state) == Step()
    assert P.evict(key, BookingState()) == Step(messages=[Out(SNAPSHOTS, key, None)])


def test_a_moved_booking_leaves_its_old_location_and_waits_for_the_new_one() -> None:
    key, state, shelf, b = answered_booking()
    P.flush(key, state, shelf.get, NOW, owed_again=False)
    moved = b.model_copy(update={"location_id": booking().location_id})
    step = P.booking(key, state, BookingChanged(deleted=False, version=v(11), row=moved), NOW)
    assert commands(step) == [
        ("location", str(b.location_id), "unsubscribe"),
        ("location", str(moved.location_id), "subscribe"),
    ]
    flushed = P.flush(key, state, shelf.get, NOW + WINDOW, owed_again=False)
    assert snapshots(flushed) == []  # no flicker: the new location has not answered


def test_a_part_unanswered_too_long_is_asked_for_again() -> None:
    b = booking()
    key, state = str(b.id), BookingState()
    P.booking(key, state, BookingChanged(deleted=False, version=v(10), row=b), NOW)
    P.flush(key, state, Shelf().get, NOW, owed_again=False)
    P.changed(state, NOW + P.ask_again_after)  # its deadline came (a tick)
    step = P.flush(key, state, Shelf().get, NOW + P.ask_again_after, owed_again=False)
    assert sorted(commands(step)) == [
        ("location", str(b.location_id), "subscribe"),
        ("vendor", str(b.vendor_id), "subscribe"),
    ]
    assert step.wake_at == NOW + 2 * P.ask_again_after


def test_bookings_flushed_together_share_their_location_view_and_get_their_own_snapshot() -> None:
    from streams.builder import SharedViews, build_snapshot

    key, state, shelf, b = answered_booking()
    other = booking(location_id=b.location_id, vendor_id=b.vendor_id, crop_type="kale")
    other_key, other_state = str(other.id), BookingState()
    P.booking(other_key, other_state, BookingChanged(deleted=False, version=v(11), row=other), NOW)
    assert P.part(other_state, "location", shelf.get("location", str(b.location_id)), NOW)
    assert P.part(other_state, "vendor", shelf.get("vendor", str(b.vendor_id)), NOW)
    views = SharedViews()
    later = NOW + timedelta(seconds=1)
    records = [
        snapshots(P.flush(k, s, shelf.get, later, owed_again=False, views=views))[0]
        for k, s in ((key, state), (other_key, other_state))
    ]
    for record, row in zip(records, (b, other), strict=True):
        alone = build_snapshot(
            row, inspection=None, readings=[], pests=[], certificates=[], deleted=False, now=later
        )
        assert record.snapshot.model_dump() == alone.model_dump()
    location = shelf.get("location", str(b.location_id))
    assert views.location(location, [], [], later) is views.location(location, [], [], later)
    # another instant, or another part of the key (newer content), is computed anew
    assert views.location(location, [], [], NOW) is not views.location(location, [], [], later)
    newer = LocationState().part(str(b.location_id))
    assert views.location(newer, [], [], later) is not views.location(location, [], [], later)


def test_a_shelf_older_than_the_answer_the_booking_applied_makes_it_ask_again() -> None:
    # The booking's state was stored with the newer answer, the shelf's write of that part was
    # lost with a worker: the shelf still holds the older part.
    key, state, shelf, b = answered_booking()
    P.flush(key, state, shelf.get, NOW, owed_again=False)
    loc = LocationState()
    loc.apply_reading(
        ReadingChanged(deleted=False, version=v(20), row=reading(b.location_id, 1)), history=4
    )
    newer = loc.part(str(b.location_id))
    assert P.part(state, "location", newer, NOW + WINDOW)  # not offered to the shelf
    step = P.flush(key, state, shelf.get, NOW + 2 * WINDOW, owed_again=False)
    assert snapshots(step) == []  # nothing built from the older part
    assert commands(step) == [("location", str(b.location_id), "subscribe")]
    # The location's answer to that subscription brings the booking its newest content.
    shelf.offer(newer)
    assert P.part(state, "location", newer, NOW + 2 * WINDOW)
    (record,) = snapshots(P.flush(key, state, shelf.get, NOW + 3 * WINDOW, owed_again=False))
    assert record.source_version == v(20) and record.snapshot.sensors
