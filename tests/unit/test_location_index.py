"""A location finds a reading by id through an index (LocationState._index): on random
changes, truncations, reloads and copies it ends where a scan of every row would."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from schemas.entities import SensorReading
from streams.messages import ReadingChanged
from streams.state import LocationState, pack, series_key
from tests.unit.test_state import NOW, v


def by_full_scan(state: LocationState, msg: ReadingChanged, history: int) -> bool:
    """apply_reading as it reads without the index: every row of every series is looked at."""
    if state._before_truncate("sensor_readings", msg.version):
        return False
    rid = f"r:{msg.row.id}"
    found = [(key, p) for key, rows in state.series.items() for p in rows if p[1] == msg.row.id]
    current = found[0][1][0] if found else None
    if state._seen(rid, current, msg.version):
        return False
    for key, old in found:
        state.series[key] = [p for p in state.series[key] if p is not old]
        if not state.series[key]:
            del state.series[key]
    if msg.deleted:
        state._bury(rid, msg.version)
    else:
        key = series_key(msg.row.sensor_id, msg.row.sensor_type)
        rows = [*state.series.get(key, []), pack(msg.version, msg.row)]
        rows.sort(key=lambda p: (p[4], p[1]), reverse=True)
        state.series[key] = rows[:history]
        state.tombstones.pop(rid, None)
    state._advance(msg.version)
    return True


def test_the_index_finds_what_a_full_scan_finds() -> None:
    location = uuid.uuid4()
    for trial in range(150):
        rnd = random.Random(trial)
        indexed, scanned = LocationState(), LocationState()
        for step in range(rnd.randint(1, 150)):
            row = SensorReading(
                id=rnd.randint(1, 30),  # ids come back: updates, also to another series
                location_id=location,
                sensor_id=rnd.choice("abc"),
                sensor_type=rnd.choice(["temperature", "humidity"]),
                value=rnd.random(),
                unit="C",
                reading_time=NOW - timedelta(seconds=rnd.randint(0, 100)),
            )
            msg = ReadingChanged(
                deleted=rnd.random() < 0.2, version=v(rnd.randint(1, 300)), row=row
            )
            assert indexed.apply_reading(msg, history=3) == by_full_scan(scanned, msg, 3)
            if rnd.random() < 0.05:
                version = v(rnd.randint(1, 300))
                assert indexed.truncate("sensor_readings", version) == scanned.truncate(
                    "sensor_readings", version
                )
            if rnd.random() < 0.05:  # stored and loaded again
                indexed = LocationState.model_validate_json(indexed.model_dump_json())
            if rnd.random() < 0.1:  # a trial copy (KeySpaceProcessor.retry)
                indexed = indexed.model_copy(deep=True)
            assert indexed.model_dump() == scanned.model_dump(), (trial, step)
