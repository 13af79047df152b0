"""The API's pure pieces: the reconcile signal, consumer lag, a snapshot row read back."""

from __future__ import annotations

import json
import re
from collections import namedtuple
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from streams import samples
from streams.api.lag import partition_lag
from streams.api.signals import (
    SIGNAL_ID_MAX,
    BookingKeys,
    reconcile_conditions,
    signal_data,
    signal_id,
)
from streams.builder import content_hash
from streams.sinks.postgres import row_params
from streams.sinks.records import record_from_row
from tests.unit.test_snapshot import build, cert, inspection, pest, reading

B, L, V, INSP = (UUID(int=n) for n in (1, 2, 3, 4))


def test_reconcile_reads_the_booking_and_every_row_of_its_parts() -> None:
    conditions = reconcile_conditions(BookingKeys(B, L, V, INSP))
    assert [(c.data_collection, c.filter) for c in conditions] == [
        ("public.storage_bookings", f"id = '{B}'"),
        ("public.crop_inspections", f"id = '{INSP}'"),
        ("public.sensor_readings", f"location_id = '{L}'"),
        ("public.pest_detections", f"location_id = '{L}'"),
        ("public.certificates", f"vendor_id = '{V}'"),
    ]


def test_a_booking_without_inspection_reads_no_inspection() -> None:
    tables = [c.data_collection for c in reconcile_conditions(BookingKeys(B, L, V, None))]
    assert "public.crop_inspections" not in tables and len(tables) == 4


def test_the_signal_is_an_incremental_execute_snapshot_with_one_condition_per_table() -> None:
    data = json.loads(signal_data(reconcile_conditions(BookingKeys(B, L, V, INSP))))
    assert data["type"] == "incremental"
    tables = [c["data-collection"] for c in data["additional-conditions"]]
    assert [re.escape(t) for t in data["data-collections"]] == tables
    assert all(set(c) == {"data-collection", "filter"} for c in data["additional-conditions"])
    assert len(signal_data(reconcile_conditions(BookingKeys(B, L, V, INSP)))) < 4096


def test_signal_ids_fit_the_signal_table() -> None:
    sid = signal_id(B, "0123456789abcdef")
    assert sid.startswith(f"reconcile-{B}") and len(sid) <= SIGNAL_ID_MAX


TP = namedtuple("TP", "topic partition")


def test_lag_is_log_end_minus_committed_and_unknowns_are_left_out() -> None:
    a, b, c, d = TP("t", 0), TP("t", 1), TP("u", 0), TP("u", 1)
    lag = partition_lag(
        [a, b, c, d],
        highwater={a: 10, b: 5, c: None, d: 3},
        committed={a: 7, b: 5, c: 1},
    )
    assert lag == {("t", 0): 3, ("t", 1): 0}


def test_lag_never_goes_negative() -> None:
    a = TP("t", 0)
    assert partition_lag([a], {a: 4}, {a: 6}) == {("t", 0): 0}


def _as_read_back(params: dict[str, Any]) -> dict[str, Any]:
    """A row as psycopg returns it: JSON columns as Python values."""
    return {k: v.obj if isinstance(v, Jsonb) else v for k, v in params.items()}


def test_a_stored_row_reads_back_as_the_record_that_was_written() -> None:
    snap = build(
        inspection_row=inspection(),
        readings=[reading(1), reading(2, "H-01", "humidity", 80.0, unit="%")],
        pests=[pest(1, "critical")],
        certificates=[cert(1), cert(2, "haccp")],
    )
    record = samples.record(snap, 7, datetime(2026, 11, 20, 12, tzinfo=UTC))
    back = record_from_row(_as_read_back(row_params(record)))
    assert back == record
    assert content_hash(back.snapshot) == record.content_hash
