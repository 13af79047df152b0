"""streams.runtime.stalls.Progress: which stream partitions count as stalled, and when."""

from __future__ import annotations

from types import SimpleNamespace

from streams.runtime.stalls import Progress, waiting_in_fetcher


def test_a_partition_whose_offsets_do_not_move_past_its_commit_is_stalled() -> None:
    progress = Progress(after_s=60)
    assert progress.stalled("tp", 222, 221, 300, now=0) is False  # first sight
    assert progress.stalled("tp", 222, 221, 300, now=59) is False
    assert progress.stalled("tp", 222, 221, 310, now=60) is True
    # found again only after another 60 s
    assert progress.stalled("tp", 222, 221, 310, now=61) is False
    assert progress.stalled("tp", 222, 221, 310, now=120) is True


def test_a_partition_that_moves_is_not_stalled() -> None:
    progress = Progress(after_s=60)
    progress.stalled("tp", 222, 221, 300, now=0)
    assert progress.stalled("tp", 222, 230, 300, now=50) is False  # read on
    assert progress.stalled("tp", 222, 230, 300, now=100) is False  # 50 s since it moved
    assert progress.stalled("tp", 231, 230, 300, now=140) is False  # committed on
    assert progress.stalled("tp", 231, 230, 300, now=201) is True


def test_an_idle_partition_is_not_stalled() -> None:
    progress = Progress(after_s=60)
    assert progress.stalled("tp", 300, 299, 300, now=0) is False
    assert progress.stalled("tp", 300, 299, 300, now=1000) is False
    # a message arrives: the time counts from when the partition was last seen idle
    assert progress.stalled("tp", 300, 299, 301, now=1001) is False
    assert progress.stalled("tp", 300, 299, 301, now=1059) is False
    assert progress.stalled("tp", 300, 299, 301, now=1060) is True


def test_read_past_the_commit_and_never_committed_is_stalled() -> None:
    """A hole at the head of the acknowledged offsets: everything read, nothing committed."""
    progress = Progress(after_s=30)
    progress.stalled("tp", 222, 299, 300, now=0)
    assert progress.stalled("tp", 222, 299, 300, now=30) is True


def test_a_partition_never_committed_nor_read_is_stalled_when_it_has_messages() -> None:
    progress = Progress(after_s=30)
    progress.stalled("tp", None, None, 5, now=0)
    assert progress.stalled("tp", None, None, 5, now=30) is True
    progress.stalled("empty", None, None, 0, now=0)
    assert progress.stalled("empty", None, None, 0, now=30) is False
    progress.stalled("unknown end", None, None, None, now=0)
    assert progress.stalled("unknown end", None, None, None, now=30) is False


def test_a_rebalance_and_a_revocation_start_the_time_over() -> None:
    progress = Progress(after_s=30)
    progress.stalled("a", 1, 0, 9, now=0)
    progress.stalled("b", 1, 0, 9, now=0)
    progress.restart()
    assert progress.stalled("a", 1, 0, 9, now=30) is False
    assert progress.stalled("a", 1, 0, 9, now=59) is False
    assert progress.stalled("a", 1, 0, 9, now=60) is True
    progress.stalled("b", 1, 0, 9, now=60)
    progress.keep(["a"])
    assert progress.stalled("b", 1, 0, 9, now=90) is False  # seen anew


def test_a_partition_with_messages_waiting_for_an_agent_is_busy_not_stalled() -> None:
    progress = Progress(after_s=30)
    progress.stalled("tp", 222, 260, 300, now=0, in_flight=True)
    assert progress.stalled("tp", 222, 260, 300, now=100, in_flight=True) is False
    # the waiting messages gone and nothing acknowledged: from then on
    assert progress.stalled("tp", 222, 260, 300, now=101) is False
    assert progress.stalled("tp", 222, 260, 300, now=131) is True


def _consumer(active: set[str], paused: set[str], fetched: dict[str, object]) -> SimpleNamespace:
    fetcher = SimpleNamespace(_records=fetched)
    thread = SimpleNamespace(_consumer=SimpleNamespace(_fetcher=fetcher))
    return SimpleNamespace(_active_partitions=active, _paused_partitions=paused, _thread=thread)


def test_records_waiting_in_the_fetcher_of_an_active_partition_are_a_worker_behind() -> None:
    consumer = _consumer({"a", "b", "p"}, {"p"}, {"a": object(), "p": object(), "gone": object()})
    assert waiting_in_fetcher(consumer, "a") is True  # the next fetch hands them out
    assert waiting_in_fetcher(consumer, "b") is False  # nothing fetched: may be stalled
    assert waiting_in_fetcher(consumer, "p") is False  # paused: the fetch skips it
    assert waiting_in_fetcher(consumer, "gone") is False  # inactive: Faust drops them
    assert (
        waiting_in_fetcher(SimpleNamespace(_active_partitions={"a"}, _paused_partitions=set()), "a")
        is False
    )
