"""The join's state transitions, without a broker: subscriptions, parts, idempotency."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from schemas.entities import Booking, Certificate, Inspection, PestDetection, SensorReading
from schemas.envelope import make_version
from streams.messages import (
    BookingChanged,
    CertificateChanged,
    InspectionChanged,
    PestChanged,
    ReadingChanged,
    Subscribe,
    Unsubscribe,
)
from streams.state import (
    BookingState,
    InspectionState,
    LocationState,
    Part,
    Shelf,
    Space,
    VendorState,
    pack,
    series_key,
    unpack,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def v(n: int) -> str:
    return make_version(n, n)


def booking(**kw: object) -> Booking:
    base = dict(
        id=uuid4(),
        farmer_id=uuid4(),
        vendor_id=uuid4(),
        location_id=uuid4(),
        crop_type="tomato",
        quantity_kg=500,
        status="confirmed",
    )
    base.update(kw)
    return Booking.model_validate(base)


def reading(
    location: UUID, rid: int, sensor: str = "t1", minutes_ago: int = 1, value: float = 4.0
) -> SensorReading:
    return SensorReading(
        id=rid,
        location_id=location,
        sensor_id=sensor,
        sensor_type="temperature",
        value=value,
        unit="C",
        reading_time=NOW - timedelta(minutes=minutes_ago),
    )


def answer(shelf: Shelf, state: BookingState, space: Space, part: Part) -> bool:
    """A part reaches the booking's partition: kept on its shelf, then applied to the booking."""
    shelf.offer(part)
    return state.apply_part(space, part)


def answered(
    shelf: Shelf, state: BookingState, b: Booking, loc: LocationState, ven: VendorState
) -> None:
    assert answer(shelf, state, "location", loc.part(str(b.location_id)))
    assert answer(shelf, state, "vendor", ven.part(str(b.vendor_id)))


def test_new_booking_subscribes_and_waits_for_every_part() -> None:
    shelf = Shelf()
    b = booking()
    state = BookingState()
    commands = state.apply_booking(BookingChanged(deleted=False, version=v(10), row=b))
    assert [(s, fk, type(c).__name__) for s, fk, c in commands] == [
        ("location", str(b.location_id), "Subscribe"),
        ("vendor", str(b.vendor_id), "Subscribe"),
    ]
    assert state.evaluate(NOW, shelf.get) is None  # parts not answered yet
    loc, ven = LocationState(), VendorState()
    assert answer(shelf, state, "location", loc.part(str(b.location_id)))
    assert state.evaluate(NOW, shelf.get) is None  # vendor still missing
    assert answer(shelf, state, "vendor", ven.part(str(b.vendor_id)))
    record = state.evaluate(NOW, shelf.get)
    assert record is not None
    assert record.snapshot.booking_id == b.id
    assert record.snapshot.status == "ready_to_publish"
    assert record.source_version == v(10)
    assert state.evaluate(NOW, shelf.get) is None  # same content: nothing new to emit


def test_location_change_moves_the_subscription_and_ignores_the_old_location() -> None:
    shelf = Shelf()
    b = booking()
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(10), row=b))
    old_loc = LocationState()
    old_loc.apply_reading(
        ReadingChanged(deleted=False, version=v(11), row=reading(b.location_id, 1)), history=4
    )
    answered(shelf, state, b, old_loc, VendorState())
    first = state.evaluate(NOW, shelf.get)
    assert first is not None and "temperature" in first.snapshot.sensors

    new_location = uuid4()
    moved = b.model_copy(update={"location_id": new_location})
    commands = state.apply_booking(BookingChanged(deleted=False, version=v(20), row=moved))
    assert [(s, fk, type(c)) for s, fk, c in commands] == [
        ("location", str(b.location_id), Unsubscribe),
        ("location", str(new_location), Subscribe),
    ]
    assert state.evaluate(NOW, shelf.get) is None  # waits for the new location's answer
    assert not answer(shelf, state, "location", old_loc.part(str(b.location_id)))  # late answer
    assert answer(shelf, state, "location", LocationState().part(str(new_location)))
    second = state.evaluate(NOW, shelf.get)
    assert second is not None
    assert second.snapshot.location_id == new_location and second.snapshot.sensors == {}
    assert second.source_version >= first.source_version


def test_a_finished_booking_keeps_following_its_parts_until_evicted() -> None:
    shelf = Shelf()
    b = booking()
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(10), row=b))
    answered(shelf, state, b, LocationState(), VendorState())
    assert state.evaluate(NOW, shelf.get) is not None
    assert state.evict(str(b.id)) == []  # a live booking is not evicted

    cancelled_at = NOW - timedelta(minutes=5)
    commands = state.apply_booking(
        BookingChanged(
            deleted=False,
            version=v(11),
            row=b.model_copy(update={"status": "cancelled"}),
            committed_at=cancelled_at,
        )
    )
    assert commands == []  # still listening: content stays a function of the sources
    record = state.evaluate(NOW, shelf.get)
    assert record is not None and record.snapshot.status == "withdrawn"
    assert record.snapshot.finished_at == cancelled_at

    loc = LocationState()
    loc.apply_reading(
        ReadingChanged(deleted=False, version=v(12), row=reading(b.location_id, 1)), history=4
    )
    assert answer(shelf, state, "location", loc.part(str(b.location_id)))
    later = state.evaluate(NOW, shelf.get)
    assert later is not None and "temperature" in later.snapshot.sensors
    assert later.snapshot.finished_at == cancelled_at

    evicted = state.evict(str(b.id))
    assert {(space, type(c)) for space, _, c in evicted} == {
        ("location", Unsubscribe),
        ("vendor", Unsubscribe),
    }

    state.apply_booking(BookingChanged(deleted=False, version=v(13), row=b))
    assert state.finished_at is None
    again = state.evaluate(NOW, shelf.get)
    assert again is not None and again.snapshot.status == "ready_to_publish"


def test_a_booking_finished_longer_ago_than_the_retention_is_expired_whenever_it_is_read() -> None:
    shelf = Shelf()
    retention = timedelta(days=90)
    b = booking()
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(10), row=b))
    answered(shelf, state, b, LocationState(), VendorState())
    state.evaluate(NOW, shelf.get)
    assert state.expires_at(retention) is None and not state.expired(NOW, retention)
    assert state.wake_at(retention) == state.deadline

    finished = NOW - timedelta(days=91)
    # A replay reads the booking's history again, long after it was finished and evicted.
    replayed = BookingState()
    replayed.apply_booking(BookingChanged(deleted=False, version=v(10), row=b))
    replayed.apply_booking(
        BookingChanged(
            deleted=False,
            version=v(11),
            row=b.model_copy(update={"status": "completed"}),
            committed_at=finished,
        )
    )
    assert replayed.expires_at(retention) == finished + retention
    assert replayed.expired(NOW, retention)  # evicted again, not published again
    assert not replayed.expired(finished + retention - timedelta(microseconds=1), retention)

    # A booking finished recently wakes up for its eviction if nothing comes sooner.
    recent = BookingState()
    recent.apply_booking(
        BookingChanged(deleted=True, version=v(12), row=b, committed_at=NOW - timedelta(days=1))
    )
    assert recent.wake_at(retention) == NOW - timedelta(days=1) + retention
    # and a live change of the same booking cancels it
    recent.apply_booking(BookingChanged(deleted=False, version=v(13), row=b))
    assert recent.expires_at(retention) is None


def test_deleted_booking_is_withdrawn_with_its_last_row() -> None:
    shelf = Shelf()
    b = booking()
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(10), row=b))
    answered(shelf, state, b, LocationState(), VendorState())
    state.evaluate(NOW, shelf.get)
    state.apply_booking(BookingChanged(deleted=True, version=v(15), row=b, committed_at=NOW))
    record = state.evaluate(NOW, shelf.get)
    assert record is not None and record.snapshot.status == "withdrawn"
    assert record.snapshot.booking_id == b.id and record.snapshot.finished_at == NOW


def test_older_or_repeated_booking_change_is_ignored() -> None:
    b = booking()
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(10), row=b))
    assert state.apply_booking(BookingChanged(deleted=False, version=v(10), row=b)) == []
    stale = b.model_copy(update={"quantity_kg": 1})
    assert state.apply_booking(BookingChanged(deleted=False, version=v(5), row=stale)) == []
    assert state.booking == b


def test_location_state_is_idempotent_and_remembers_deletes() -> None:
    loc_id = uuid4()
    loc = LocationState()
    r1 = ReadingChanged(
        deleted=False, version=v(1), row=reading(loc_id, 1, minutes_ago=5, value=3.0)
    )
    r2 = ReadingChanged(
        deleted=False, version=v(2), row=reading(loc_id, 2, minutes_ago=1, value=5.0)
    )
    assert loc.apply_reading(r1, history=4) and loc.apply_reading(r2, history=4)
    assert not loc.apply_reading(r2, history=4)
    assert [r.value for r in loc.part("x").readings] == [5.0]
    # Deleting the latest reading brings back the one before it.
    assert loc.apply_reading(ReadingChanged(deleted=True, version=v(3), row=r2.row), history=4)
    assert [r.value for r in loc.part("x").readings] == [3.0]
    # A late duplicate of the insert does not resurrect the deleted reading.
    assert not loc.apply_reading(r2, history=4)
    assert [r.value for r in loc.part("x").readings] == [3.0]
    assert loc.version == v(3)


def test_location_history_is_bounded_per_sensor() -> None:
    loc_id = uuid4()
    loc = LocationState()
    for i in range(1, 11):
        loc.apply_reading(
            ReadingChanged(deleted=False, version=v(i), row=reading(loc_id, i, minutes_ago=60 - i)),
            history=3,
        )
    assert [r.row.id for r in loc.history()[series_key("t1", "temperature")]] == [10, 9, 8]


def typed(location: UUID, rid: int, sensor: str, kind: str, minutes_ago: int) -> SensorReading:
    return reading(location, rid, sensor, minutes_ago, value=float(rid)).model_copy(
        update={"sensor_type": kind}
    )


def test_a_combined_device_keeps_its_latest_reading_of_every_type() -> None:
    """A stream of one type's readings never pushes the device's other type out of history."""
    loc_id = uuid4()
    loc = LocationState()
    loc.apply_reading(
        ReadingChanged(deleted=False, version=v(1), row=typed(loc_id, 1, "th", "temperature", 90)),
        history=3,
    )
    for i in range(2, 40):
        row = typed(loc_id, i, "th", "humidity", 60 - i)
        assert loc.apply_reading(ReadingChanged(deleted=False, version=v(i), row=row), history=3)
    assert {(r.sensor_type, r.id) for r in loc.part("x").readings} == {
        ("temperature", 1),
        ("humidity", 39),
    }
    assert [len(rows) for _, rows in sorted(loc.history().items())] == [3, 1]
    # Deleting the temperature reading removes that type, not the device's humidity.
    gone = typed(loc_id, 1, "th", "temperature", 90)
    assert loc.apply_reading(ReadingChanged(deleted=True, version=v(50), row=gone), history=3)
    assert [(r.sensor_type, r.id) for r in loc.part("x").readings] == [("humidity", 39)]


def test_a_reading_whose_type_changes_moves_to_its_new_series() -> None:
    loc_id = uuid4()
    loc = LocationState()
    first = typed(loc_id, 1, "th", "temperature", 5)
    loc.apply_reading(ReadingChanged(deleted=False, version=v(1), row=first), history=3)
    moved = first.model_copy(update={"sensor_type": "humidity"})
    assert loc.apply_reading(ReadingChanged(deleted=False, version=v(2), row=moved), history=3)
    assert list(loc.series) == [series_key("th", "humidity")]


def _device_readings(loc_id: UUID) -> list[SensorReading]:
    """A combined device's readings, newest first: one humidity, two temperatures."""
    return [
        typed(loc_id, 3, "th", "humidity", 1),
        typed(loc_id, 2, "th", "temperature", 2),
        typed(loc_id, 1, "th", "temperature", 3),
    ]


def _stored_before(readings: dict[str, list[SensorReading]]) -> str:
    """A location's state as written with one Versioned model per reading under ``readings``."""
    stored = {
        key: [{"version": v(r.id), "row": r.model_dump(mode="json")} for r in rows]
        for key, rows in readings.items()
    }
    return json.dumps(
        {"subscribers": ["b1"], "version": v(3), "tombstones": {}, "readings": stored, "pests": {}}
    )


def test_a_state_stored_per_sensor_id_loads_per_type() -> None:
    """The changelog and RocksDB hold states written before the history was kept per type."""
    loc = LocationState.model_validate_json(_stored_before({"th": _device_readings(uuid4())}))
    assert {k: [x.row.id for x in rs] for k, rs in loc.history().items()} == {
        series_key("th", "humidity"): [3],
        series_key("th", "temperature"): [2, 1],
    }
    assert {(r.sensor_type, r.id) for r in loc.part("x").readings} == {
        ("humidity", 3),
        ("temperature", 2),
    }
    # What it writes back loads unchanged.
    assert LocationState.model_validate_json(loc.model_dump_json()) == loc


def test_a_state_stored_with_versioned_readings_per_type_loads_into_packed_series() -> None:
    """States written before the series were packed keyed ``readings`` by series_key, with
    a Versioned reading each; they load into the same series, the same part, and write back
    in the packed form."""
    rows = _device_readings(uuid4())
    per_series: dict[str, list[SensorReading]] = {}
    for r in rows:
        per_series.setdefault(series_key(r.sensor_id, r.sensor_type), []).append(r)
    loc = LocationState.model_validate_json(_stored_before(per_series))
    assert {k: [(x.version, x.row) for x in rs] for k, rs in loc.history().items()} == {
        series_key("th", "humidity"): [(v(3), rows[0])],
        series_key("th", "temperature"): [(v(2), rows[1]), (v(1), rows[2])],
    }
    assert loc.readings == {}
    written = json.loads(loc.model_dump_json())
    assert "readings" not in written and len(written["series"]) == 2
    again = LocationState.model_validate_json(loc.model_dump_json())
    assert again == loc and again.part("x") == loc.part("x")
    # a reading applied after loading finds the old rows by id
    update = rows[2].model_copy(update={"value": 9.5})
    assert again.apply_reading(ReadingChanged(deleted=False, version=v(9), row=update), history=3)
    assert [x.row.value for x in again.history()[series_key("th", "temperature")]] == [2.0, 9.5]


def test_a_packed_reading_unpacks_to_the_same_row() -> None:
    loc_id = uuid4()
    row = typed(loc_id, 7, "th", "temperature", 3).model_copy(
        update={"reading_time": datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC), "value": 0.1}
    )
    assert unpack(series_key("th", "temperature"), pack(v(7), row)) == row
    before = datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC)
    old = row.model_copy(update={"reading_time": before, "status": "fault"})
    assert unpack(series_key("th", "temperature"), pack(v(7), old)) == old


def test_pests_outside_retention_are_forgotten() -> None:
    loc_id = uuid4()
    loc = LocationState()
    old = PestDetection(
        id=uuid4(),
        location_id=loc_id,
        pest_type="moth",
        severity="low",
        confidence=0.5,
        detected_at=NOW - timedelta(days=9),
    )
    new = old.model_copy(update={"id": uuid4(), "detected_at": NOW - timedelta(days=1)})
    loc.apply_pest(PestChanged(deleted=False, version=v(1), row=old), now=NOW)
    loc.apply_pest(PestChanged(deleted=False, version=v(2), row=new), now=NOW)
    assert [p.id for p in loc.part("x").pests] == [new.id]


def test_vendor_and_inspection_states() -> None:
    ven = VendorState()
    cert = Certificate(id=uuid4(), vendor_id=uuid4(), type="organic", status="valid")
    assert ven.apply_certificate(CertificateChanged(deleted=False, version=v(1), row=cert))
    revoked = cert.model_copy(update={"status": "revoked"})
    assert ven.apply_certificate(CertificateChanged(deleted=False, version=v(2), row=revoked))
    assert not ven.apply_certificate(CertificateChanged(deleted=False, version=v(1), row=cert))
    assert [c.status for c in ven.part("x").certificates] == ["revoked"]

    ins = InspectionState()
    row = Inspection(id=uuid4(), status="completed", quality_score="91.50")
    assert ins.apply_inspection(InspectionChanged(deleted=False, version=v(1), row=row))
    assert ins.apply_inspection(InspectionChanged(deleted=True, version=v(2), row=row))
    assert ins.part("x").inspection is None
    assert ins.subscribe(Subscribe(booking_id="b1")) and ins.subscribers == ["b1"]
    assert ins.subscribe(Subscribe(booking_id="b1")) and ins.subscribers == ["b1"]
    assert not ins.subscribe(Unsubscribe(booking_id="b1")) and ins.subscribers == []


def test_time_alone_changes_the_snapshot_after_the_deadline() -> None:
    shelf = Shelf()
    b = booking()
    loc = LocationState()
    pest = PestDetection(
        id=uuid4(),
        location_id=b.location_id,
        pest_type="weevil",
        severity="high",
        confidence=0.9,
        detected_at=NOW - timedelta(days=7) + timedelta(minutes=1),
    )
    loc.apply_pest(PestChanged(deleted=False, version=v(2), row=pest), now=NOW)
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(1), row=b))
    answered(shelf, state, b, loc, VendorState())
    first = state.evaluate(NOW, shelf.get)
    assert first is not None and first.snapshot.pest_count == 1 and first.snapshot.has_pest_alerts
    assert state.deadline is not None and state.deadline <= NOW + timedelta(minutes=1, seconds=1)
    later = state.deadline + timedelta(seconds=1)
    second = state.evaluate(later, shelf.get)
    assert second is not None and second.snapshot.pest_count == 0
    assert (
        second.source_version == first.source_version and second.evaluated_at > first.evaluated_at
    )


def test_a_version_floor_raises_what_a_booking_carries_and_never_lowers_it() -> None:
    shelf = Shelf()
    from streams.messages import BOOKING_MSG, VersionFloor
    from streams.state import PartitionFloor

    msg = BOOKING_MSG.validate_json(VersionFloor(version=v(9)).model_dump_json())
    assert isinstance(msg, VersionFloor) and msg.version == v(9)
    floor = PartitionFloor()
    assert floor.raise_to(v(9)) and not floor.raise_to(v(3)) and floor.version == v(9)

    b = booking()
    state = BookingState()
    state.apply_booking(BookingChanged(deleted=False, version=v(2), row=b))
    answered(shelf, state, b, LocationState(), VendorState())
    state.floor(floor.version)
    record = state.evaluate(NOW, shelf.get)
    assert record is not None and record.source_version == v(9)
    state.floor(v(1))
    assert state.watermark == v(9)


def test_a_partitions_shelf_keeps_the_newest_part_of_each_key_once() -> None:
    shelf = Shelf()
    location = uuid4()
    loc = LocationState()
    loc.apply_reading(
        ReadingChanged(deleted=False, version=v(5), row=reading(location, 1)), history=4
    )
    newer = loc.part(str(location)).model_copy(update={"bookings": ["a", "b"]})
    assert shelf.offer(newer)
    held = shelf.get("location", str(location))
    assert held is not None and held.bookings == [] and held.version == v(5)
    older = LocationState().part(str(location))  # version 0: a late answer
    assert not shelf.offer(older)
    assert shelf.get("location", str(location)) == held
    # equal version, other content (a pest left the window): the later one is kept
    same = held.model_copy(update={"readings": []})
    assert shelf.offer(same)
    held = shelf.get("location", str(location))
    assert held is not None and held.readings == []
    assert shelf.get("vendor", str(location)) is None


def test_bookings_of_a_partition_share_its_parts_and_each_waits_for_its_own_answer() -> None:
    shelf = Shelf()
    location, vendor = uuid4(), uuid4()
    b1, b2 = booking(location_id=location, vendor_id=vendor), booking(location_id=location)
    s1, s2 = BookingState(), BookingState()
    s1.apply_booking(BookingChanged(deleted=False, version=v(1), row=b1))
    s2.apply_booking(BookingChanged(deleted=False, version=v(2), row=b2))
    loc = LocationState()
    loc.apply_reading(
        ReadingChanged(deleted=False, version=v(7), row=reading(location, 1, value=3.5)),
        history=4,
    )
    answered(shelf, s1, b1, loc, VendorState())
    # b2's location is on the shelf, but b2 was not answered yet: it waits
    assert s2.evaluate(NOW, shelf.get) is None
    answered(shelf, s2, b2, loc, VendorState())
    r1, r2 = s1.evaluate(NOW, shelf.get), s2.evaluate(NOW, shelf.get)
    assert r1 is not None and r2 is not None
    assert r1.snapshot.sensors["temperature"].value == r2.snapshot.sensors["temperature"].value
    assert r1.source_version == v(7) and r2.source_version == v(7)


def test_a_booking_stored_with_copies_of_its_parts_asks_for_them_again() -> None:
    b = booking()
    old = {
        "booking": b.model_dump(mode="json"),
        "booking_version": v(3),
        "location": {"fk": str(b.location_id), "version": v(4), "readings": [], "pests": []},
        "vendor": {"fk": str(b.vendor_id), "version": v(2), "certificates": []},
        "watermark": v(4),
    }
    state = BookingState.model_validate_json(json.dumps(old))
    shelf = Shelf()
    assert state.location is not None and state.location.ready
    assert state.evaluate(NOW, shelf.get) is None  # no part on the shelf: nothing to build
    assert state.missing(shelf.get) == ["location", "vendor"]
    commands = state.ask_again(str(b.id), state.missing(shelf.get))
    assert {(space, fk, type(c)) for space, fk, c in commands} == {
        ("location", str(b.location_id), Subscribe),
        ("vendor", str(b.vendor_id), Subscribe),
    }
    assert not state.location.ready and state.missing(shelf.get) == []
    answered(shelf, state, b, LocationState(), VendorState())
    record = state.evaluate(NOW, shelf.get)
    assert record is not None and record.source_version == v(4)  # never below what it had


def test_a_part_asked_for_and_never_answered_is_asked_for_again() -> None:
    after = timedelta(seconds=30)
    b = booking()
    state = BookingState()
    commands = state.apply_booking(BookingChanged(deleted=False, version=v(1), row=b), NOW)
    assert {space for space, _, _ in commands} == {"location", "vendor"}
    assert state.unanswered(NOW + timedelta(seconds=29), after) == []
    assert state.wake_at(timedelta(days=90), after) == NOW + after
    # the vendor answered; the location's subscription was lost with a worker
    state.apply_part("vendor", VendorState().part(str(b.vendor_id)))
    assert state.unanswered(NOW + after, after) == ["location"]
    again = state.ask_again(str(b.id), ["location"], NOW + after)
    assert [(space, fk, type(c)) for space, fk, c in again] == [
        ("location", str(b.location_id), Subscribe)
    ]
    assert state.unanswered(NOW + after, after) == []  # asked again: waits once more
    assert state.wake_at(timedelta(days=90), after) == NOW + 2 * after
    state.apply_part("location", LocationState().part(str(b.location_id)))
    assert state.unanswered(NOW + 10 * after, after) == []
    assert state.wake_at(timedelta(days=90), after) is None


def test_a_series_keeps_its_newest_readings_in_order_whatever_order_they_arrive_in() -> None:
    """Readings arriving out of order, at equal times, moved back and forth in time and between
    sensors: each series holds what a sort of its readings would keep (the ``history`` newest
    by reading time, then id, newest first), one reading at a time."""
    rng = random.Random(7)
    loc_id = uuid4()
    loc = LocationState()
    expected: dict[str, list[SensorReading]] = {}
    for n in range(1, 600):
        rid = rng.randint(1, 40)
        row = reading(loc_id, rid, f"s{rng.randint(0, 2)}", rng.randint(0, 20))
        assert loc.apply_reading(ReadingChanged(deleted=False, version=v(n), row=row), history=4)
        for key in list(expected):
            expected[key] = [r for r in expected[key] if r.id != rid]
        key = series_key(row.sensor_id, row.sensor_type)
        series = sorted(
            [*expected.get(key, []), row], key=lambda r: (r.reading_time, r.id), reverse=True
        )
        expected[key] = series[:4]
        expected = {k: rows for k, rows in expected.items() if rows}
        assert {k: [r.row for r in rows] for k, rows in loc.history().items()} == expected
