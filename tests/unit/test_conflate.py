"""Conflation with a bounded delay, as pure code: feed changes and times, see what leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from streams.conflate import DueIndex, Outbox, is_due, mark, sent

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
W = timedelta(milliseconds=250)


def ms(n: float) -> datetime:
    return T0 + timedelta(milliseconds=n)


def run(changes: list[float], until: float, step: float = 10.0) -> list[tuple[float, float]]:
    """One key: a change at each time of ``changes`` (ms), and a flush opportunity every
    ``step`` ms (a batch or a tick). Returns (sent at, first change it reflects) pairs."""
    box, out, first = Outbox(), [], None
    pending = sorted(changes)
    t = 0.0
    while t <= until:
        while pending and pending[0] <= t:
            at = pending.pop(0)
            mark(box, ms(at), W)
            first = at if first is None else first
        if is_due(box, ms(t)):
            assert first is not None
            out.append((t, first))
            sent(box, ms(t))
            first = None
        t += step
    return out


def test_an_isolated_change_leaves_at_once() -> None:
    assert run([100], until=1000) == [(100, 100)]


def test_a_storm_leaves_once_per_window_with_the_newest_content() -> None:
    storm = [float(t) for t in range(0, 2000, 2)]  # a change every 2 ms for 2 s
    out = run(storm, until=3000)
    sends = [t for t, _ in out]
    assert sends[0] == 0
    assert all(b - a >= 250 for a, b in pairwise(sends))
    assert len(out) <= 2000 / 250 + 1
    # never later than the window after the first change a message reflects
    assert all(t - first <= 250 for t, first in out)
    # the last state leaves: the final message comes after the last change
    assert sends[-1] >= storm[-1]


def test_a_change_after_a_quiet_window_is_not_delayed() -> None:
    out = run([0, 50, 600], until=1500)
    assert out == [(0, 0), (250, 50), (600, 600)]


def test_the_pending_change_survives_in_the_stored_outbox() -> None:
    box = Outbox()
    mark(box, ms(0), W)
    sent(box, ms(0))
    mark(box, ms(10), W)
    # the worker stores the state and crashes before the window ends
    restored = Outbox.model_validate_json(box.model_dump_json())
    assert restored.pending and restored.due == ms(250)
    assert not is_due(restored, ms(249)) and is_due(restored, ms(250))


def test_a_new_subscriber_is_owed_an_answer_until_sent() -> None:
    box = Outbox(fresh=["b1"])
    assert box.pending and box.due is None
    sent(box, ms(0))
    assert not box.pending


def test_due_index_pops_each_key_once_and_follows_the_latest_due() -> None:
    index = DueIndex()
    index.set(0, "a", ms(100))
    index.set(0, "b", ms(50))
    index.set(0, "a", ms(300))  # moved later: the earlier entry is stale
    index.set(1, "c", ms(10))
    assert index.next_due(0) == ms(50)
    assert index.due(0, ms(200)) == ["b"]
    assert index.next_due(0) == ms(300)
    assert index.due(0, ms(400)) == ["a"]
    assert index.due(0, ms(400)) == []
    assert index.due(1, ms(10)) == ["c"]


def test_due_index_load_merges_what_the_table_holds() -> None:
    index = DueIndex()
    index.set(2, "touched", ms(500))
    assert not index.loaded(2)
    index.load(2, [("touched", ms(0)), ("left-by-a-crash", ms(20)), ("idle", None)])
    assert index.loaded(2)
    # what this worker set since it started wins over the table's older view
    assert index.due(2, ms(100)) == ["left-by-a-crash"]
    assert index.due(2, ms(500)) == ["touched"]
    index.forget([2])
    assert not index.loaded(2) and index.due(2, ms(1000)) == []


def test_a_part_goes_once_to_each_booking_partition_naming_its_subscribers() -> None:
    from streams.processors.keyspace import grouped
    from streams.topology import partition_of

    subscribers = [f"00000000-0000-0000-0000-{i:012d}" for i in range(40)]
    by_partition = grouped(subscribers, 4)
    assert sorted(b for ids in by_partition.values() for b in ids) == sorted(subscribers)
    for partition, ids in by_partition.items():
        assert all(partition_of(b, 4) == partition for b in ids)
    assert len(by_partition) <= 4
