"""Versions around the connector's initial snapshot, over captured-shape events (tests/data).

Right after the initial snapshot, Debezium's ``source.sequence`` has no last-commit LSN: in the
snapshot rows (``op: "r"``) and in the changes of the first transaction it streams. A
transaction open across the snapshot has changes whose own LSN lies *below* the snapshot's
consistent point; it commits after it, so its changes must order above the snapshot rows.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from schemas.envelope import BookingEvent, make_version
from streams.messages import BookingChanged
from streams.routing import route
from streams.state import BookingState

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURED = json.loads((DATA / "storage_bookings.json").read_text())
SNAPSHOT_ROW: dict[str, Any] = CAPTURED[0]["value"]  # op r, sequence [null, C]
UPDATE: dict[str, Any] = CAPTURED[1]["value"]  # op u, streamed
C = SNAPSHOT_ROW["source"]["lsn"]  # the snapshot's consistent point


def streamed(
    template: dict[str, Any], commit: int | None, lsn: int, **after: Any
) -> dict[str, Any]:
    event = copy.deepcopy(template)
    event["source"].update(
        lsn=lsn,
        sequence=json.dumps([None if commit is None else str(commit), str(lsn)]),
        snapshot="false",
    )
    event["after"].update(after)
    return event


def version(event: dict[str, Any]) -> str:
    return BookingEvent.model_validate(event).version


def test_the_captured_events_are_shaped_as_assumed() -> None:
    assert SNAPSHOT_ROW["op"] == "r" and json.loads(SNAPSHOT_ROW["source"]["sequence"])[0] is None
    assert UPDATE["op"] == "u" and json.loads(UPDATE["source"]["sequence"])[0] is not None


@pytest.mark.parametrize(
    ("commit", "lsn", "marker", "expected"),
    [
        pytest.param(None, C, "first", make_version(0, C), id="initial-snapshot-row"),
        pytest.param(None, C, "last_in_data_collection", make_version(0, C), id="snapshot-last"),
        pytest.param(None, C - 500, "false", make_version(C - 500, C - 500), id="open-across"),
        pytest.param(None, C + 500, "false", make_version(C + 500, C + 500), id="first-txn"),
        pytest.param(C + 900, C + 1000, "false", make_version(C + 900, C + 1000), id="streamed"),
        pytest.param(None, C + 700, "incremental", make_version(C + 700, C + 700), id="incr"),
        pytest.param(C + 900, C + 950, "incremental", make_version(C + 900, C + 950), id="incr2"),
    ],
)
def test_version_of_each_kind_of_event(
    commit: int | None, lsn: int, marker: str, expected: str
) -> None:
    event = copy.deepcopy(SNAPSHOT_ROW if marker != "false" else UPDATE)
    event["source"].update(
        lsn=lsn, sequence=json.dumps([None if commit is None else str(commit), str(lsn)])
    )
    event["source"]["snapshot"] = marker
    assert version(event) == expected


def test_a_transaction_open_across_the_snapshot_orders_above_the_snapshot_rows() -> None:
    # T1 began before the snapshot and updated the booking at an LSN below C; it committed
    # after the snapshot, so its change is streamed first, with no last-commit LSN.
    t1 = streamed(UPDATE, None, C - 400, quantity_kg=1500)
    t1_end = C + 200  # the end of T1's commit record: T2's last-commit LSN
    t2 = streamed(UPDATE, t1_end, C + 300, quantity_kg=1600)
    assert version(SNAPSHOT_ROW) < version(t1) < version(t2)

    state = BookingState()
    for event in (SNAPSHOT_ROW, t1, t2):
        [(_, _, message)] = route("storage_bookings", json.dumps(event).encode())
        assert isinstance(message, BookingChanged)
        state.apply_booking(message)
        assert state.booking == message.row  # none of them is taken for an older change
    assert state.booking is not None and state.booking.quantity_kg == 1600


def test_the_first_transactions_changes_keep_their_order_and_stay_below_the_next() -> None:
    first = [streamed(UPDATE, None, C + n) for n in (100, 150, 180)]
    end_of_first = C + 190
    later = streamed(UPDATE, end_of_first, C + 120)  # a concurrent transaction, earlier LSN
    versions = [version(e) for e in first]
    assert versions == sorted(versions)
    assert max(versions) < version(later)


def test_a_duplicate_snapshot_row_after_streamed_changes_is_older() -> None:
    """A snapshot re-delivered (connector restart mid-snapshot) never undoes streamed changes."""
    t1 = streamed(UPDATE, None, C + 10, quantity_kg=1500)
    state = BookingState()
    for event in (SNAPSHOT_ROW, t1, SNAPSHOT_ROW):
        [(_, _, message)] = route("storage_bookings", json.dumps(event).encode())
        assert isinstance(message, BookingChanged)
        state.apply_booking(message)
    assert state.booking is not None and state.booking.quantity_kg == 1500
