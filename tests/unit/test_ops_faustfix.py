"""streams.runtime.faustfix: after a table recovery, stream partitions are seeked before they
resume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.tables.recovery import Recovery

from streams.config import get_settings
from streams.runtime import build, faustfix

build(get_settings(), agents=False)  # building an app installs the fixes


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in ("perform_seek", "send", "maybe_start"):
                return asyncio.sleep(0)
            if name == "assignment":
                return {"stream-tp", "changelog-tp"}
            if name == "assigned_standbys":
                return []
            return None

        return call


class _FakeRecovery:
    def __init__(self) -> None:
        self.consumer = _Recorder()
        self.tables = _Recorder()
        self.tables.values = lambda: []  # type: ignore[attr-defined]
        self.completed = _Recorder()
        self.log = _Recorder()
        self.app = type(
            "App",
            (),
            {
                "consumer": self.consumer,
                "consumer_generation_id": 7,
                "on_rebalance_complete": _Recorder(),
                "flow_control": _Recorder(),
                "_fetcher": _Recorder(),
                "assignor": _Recorder(),
                "on_rebalance_end": lambda self: None,
                "conf": type("Conf", (), {"broker_request_timeout": 1.0})(),
            },
        )()
        self.actives_for_table: dict[Any, Any] = {}
        self.standbys_for_table: dict[Any, Any] = {}

    def _set_recovery_ended(self) -> None:
        pass

    def _is_changelog_tp(self, tp: str) -> bool:
        return tp.startswith("changelog")

    async def _wait(self, coro: Any, timeout: float | None = None) -> None:
        await coro


def test_the_fix_is_installed() -> None:
    assert Recovery.on_recovery_completed is faustfix._on_recovery_completed


def test_stream_partitions_are_seeked_to_committed_offsets_before_they_resume() -> None:
    recovery = _FakeRecovery()
    asyncio.run(faustfix._on_recovery_completed(recovery, generation_id=7))
    calls = recovery.consumer.calls
    assert (
        calls.index("perform_seek") < calls.index("resume_partitions") < calls.index("resume_flow")
    )


class _SeekingConsumer:
    """What perform_seek uses of Faust's consumer; records its seeks."""

    def __init__(self, committed: dict[Any, int | None]) -> None:
        self._committed = committed
        self._read_offset: dict[Any, int | None] = {}
        self._committed_offset: dict[Any, int | None] = {}
        self.seeks: list[tuple[Any, int]] = []
        tables = type("Tables", (), {"changelog_topics": {"app-state-changelog"}})()
        self.app = type("App", (), {"tables": tables})()

    async def seek_to_committed(self) -> dict[Any, int | None]:
        return dict(self._committed)

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    async def seek_wait(self, offsets: dict[Any, int]) -> None:
        self.seeks.extend(offsets.items())


def test_a_partition_without_a_commit_goes_back_to_its_start_when_seeking_to_committed() -> None:
    """Records Faust dropped across a rebalance are fetched again: aiokafka's own
    seek_to_committed leaves such a partition past them."""
    from faust.types import TP

    committed = {
        TP("sg.public.sensor_readings", 0): None,
        TP("sg.public.sensor_readings", 1): 0,
        TP("sg.public.sensor_readings", 2): 5,
        TP("app-state-changelog", 0): None,
    }
    consumer = _SeekingConsumer(committed)
    asyncio.run(faustfix._perform_seek(consumer))
    assert consumer.seeks == [
        (TP("sg.public.sensor_readings", 0), 0),
        (TP("sg.public.sensor_readings", 1), 0),
    ]
    assert consumer._read_offset[TP("sg.public.sensor_readings", 0)] is None
    assert consumer._read_offset[TP("sg.public.sensor_readings", 2)] == 5
    assert consumer._committed_offset == {
        TP("sg.public.sensor_readings", 1): None,
        TP("sg.public.sensor_readings", 2): 5,
    }


class _Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _TP(tuple):  # what aiokafka's TopicPartition offers the fix: a topic and a partition
    topic = property(lambda self: self[0])
    partition = property(lambda self: self[1])


class _FetchingThread:
    """The consumer thread's view the fetch fix reads: Faust's partition sets."""

    def __init__(self, active: set[Any] | None, buffered: set[Any] = frozenset()) -> None:
        self.consumer = type("FaustConsumer", (), {})()
        self.consumer._active_partitions = active
        self.consumer._buffered_partitions = set(buffered)


class _Client:
    def __init__(self, assigned: set[Any] | None = None) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self.assigned = assigned

    def seek(self, tp: Any, offset: int) -> None:
        from aiokafka.errors import IllegalStateError

        if self.assigned is not None and tp not in self.assigned:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.seeks.append((tp, offset))


def test_a_fetch_never_drains_partitions_it_was_not_asked_for() -> None:
    asked: list[Any] = []
    a = _TP(("t", 0))

    async def fetch(self: Any, consumer: Any, active: Any, **kwargs: Any) -> dict[Any, Any]:
        asked.append(active)
        return {a: [_Record(1)]}

    original, faustfix._fetch_records = faustfix._fetch_records, fetch  # type: ignore[assignment]
    try:
        live = {a}
        thread, client = _FetchingThread(live), _Client()
        got = asyncio.run(faustfix._fetch_only_active(thread, client, live))
        assert [r.offset for r in got[a]] == [1]
        assert asked[-1] == frozenset({a}) and asked[-1] is not live
        assert asyncio.run(faustfix._fetch_only_active(thread, client, set())) == {}
        assert len(asked) == 1
        assert a in asyncio.run(faustfix._fetch_only_active(thread, client, None))
        assert client.seeks == []
    finally:
        faustfix._fetch_records = original  # type: ignore[assignment]


def test_records_of_a_partition_paused_while_the_fetch_waited_are_fetched_again() -> None:
    """A fetch asked for before a rebalance returns, after its seek, records of partitions
    paused until the recovery resumes them: they go back instead of being dropped."""
    paused, active, buffered = _TP(("cdc", 0)), _TP(("cdc", 1)), _TP(("cdc", 2))
    thread, client = _FetchingThread({active}, buffered={buffered}), _Client()
    records = {
        paused: [_Record(429), _Record(430)],
        active: [_Record(7)],
        buffered: [_Record(3)],
    }
    got = faustfix._put_back_inactive(thread.consumer, client, records)
    assert set(got) == {active, buffered}
    assert client.seeks == [(paused, 429)]


class _Buffer:
    """A producer buffer whose task hands ``per_round`` messages to the producer per 0.1 s
    round of Faust's flush_atmost, or none at all."""

    state = "running"

    def __init__(self, size: int, per_round: int) -> None:
        self.size, self.per_round, self.rounds = size, per_round, 0

    async def flush_atmost(self, max_messages: int) -> int:
        self.rounds += 1
        sent = min(self.size, self.per_round, max_messages)
        self.size -= sent
        return sent


def test_the_buffer_flush_before_a_commit_waits_until_every_message_left() -> None:
    # Faust's own flush returns at the first 0.1 s without a message sent (an event loop held
    # by a batch), and the commit then goes past state writes still in the buffer.
    buffer = _Buffer(size=10, per_round=3)
    asyncio.run(faustfix._flush_until_empty(buffer))
    assert buffer.size == 0 and buffer.rounds == 4


def test_a_buffer_that_never_moves_fails_the_flush_instead_of_letting_the_commit_go(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(faustfix, "_FLUSH_STALLED_S", 0.0)
    buffer = _Buffer(size=5, per_round=0)
    with pytest.raises(faustfix.BufferStalled, match="5 changelog messages"):
        asyncio.run(faustfix._flush_until_empty(buffer))
    assert buffer.size == 5


def test_the_buffer_fix_is_installed() -> None:
    from faust.transport.producer import ProducerBuffer

    assert ProducerBuffer.flush is faustfix._flush_until_empty


def test_a_hole_is_read_again_before_it_counts_as_a_gap() -> None:
    rewinds = faustfix.Rewinds()
    # offsets 272-293 never received; 271 is committed (the next to read) and not received either
    assert rewinds.hole("tp", 272, 293, committed=271) is False
    assert rewinds.due() == {"tp": 271}
    assert rewinds.due() == {}  # handed out once
    # read again from 271, the same hole: the records are not there
    assert rewinds.hole("tp", 272, 293, committed=271) is True
    # a later hole is read again too
    assert rewinds.hole("tp", 400, 410, committed=350) is False
    assert rewinds.due() == {"tp": 350}


def test_a_hole_without_a_commit_goes_back_to_its_first_offset() -> None:
    rewinds = faustfix.Rewinds()
    assert rewinds.hole("tp", 10, 20, committed=None) is False
    assert rewinds.hole("tp", 11, 20, committed=None) is False  # still pending: not a gap yet
    assert rewinds.due() == {"tp": 10}
    assert rewinds.hole("tp", 11, 20, committed=None) is True


def test_a_rebalance_forgets_the_holes() -> None:
    rewinds = faustfix.Rewinds()
    rewinds.hole("tp", 5, 9, committed=4)
    rewinds.forget()
    assert rewinds.due() == {}
    assert rewinds.hole("tp", 5, 9, committed=4) is False  # read again after the rebalance


class _GapConsumer:
    """What Consumer._add_gap and getmany touch, for the patched versions."""

    def __init__(self) -> None:
        self._committed_offset = {"tp": 271}
        self.seeks: list[tuple[str, int]] = []

    def assignment(self) -> set[str]:
        return {"tp"}

    async def seek_wait(self, positions: dict[str, int]) -> None:
        self.seeks.extend(positions.items())


def test_the_consumer_goes_back_at_its_next_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.consumer import Consumer

    assert Consumer._add_gap is faustfix._add_gap_or_rewind
    assert Consumer.getmany is faustfix._getmany_after_rewinds
    added: list[tuple[str, int, int]] = []

    async def original_add_gap(self: Any, tp: str, first: int, last: int) -> None:
        added.append((tp, first, last))

    async def original_getmany(self: Any, timeout: float) -> Any:
        yield ("tp", "a message")

    monkeypatch.setattr(faustfix, "_add_gap", original_add_gap)
    monkeypatch.setattr(faustfix, "_getmany", original_getmany)
    consumer = _GapConsumer()

    async def scenario() -> list[Any]:
        await faustfix._add_gap_or_rewind(consumer, "tp", 272, 293)
        assert added == [] and consumer.seeks == []
        got = [item async for item in faustfix._getmany_after_rewinds(consumer, 1.0)]
        assert consumer.seeks == [("tp", 271)]
        await faustfix._add_gap_or_rewind(consumer, "tp", 272, 293)
        return got

    assert asyncio.run(scenario()) == [("tp", "a message")]
    assert added == [("tp", 272, 293)]
    assert consumer.seeks == [("tp", 271)]


class _OffsetsConsumer:
    """What Consumer._new_offset reads: the acknowledged offsets, the gaps, the commit."""

    def __init__(self, committed: int | None, acked: list[int]) -> None:
        from collections import defaultdict

        from intervaltree import IntervalTree

        self._committed_offset = {"tp": committed}
        self._acked = {"tp": list(acked)}
        self._acked_index = {"tp": set(acked)}
        self._gap: dict[str, Any] = defaultdict(IntervalTree)


def test_nothing_is_committed_past_a_missing_committed_offset() -> None:
    from faust.transport.consumer import Consumer

    assert Consumer._new_offset is faustfix._new_offset_after_the_committed
    # 31 is the next offset to read: with it missing, Faust alone would commit 35
    assert faustfix._new_offset(_OffsetsConsumer(31, [32, 33, 34]), "tp") == 35
    new_offset = faustfix._new_offset_after_the_committed
    assert new_offset(_OffsetsConsumer(31, [32, 33, 34]), "tp") is None
    # with it there, the same
    assert new_offset(_OffsetsConsumer(31, [31, 32, 34]), "tp") == 33
    # nothing committed yet: as Faust does
    assert new_offset(_OffsetsConsumer(None, [7, 8]), "tp") == 9


def test_a_gap_at_the_committed_offset_counts_as_there() -> None:
    consumer = _OffsetsConsumer(31, [33, 34])
    consumer._gap["tp"].addi(31, 33)  # 31 and 32 counted as a gap (Rewinds found them twice)
    assert faustfix._new_offset_after_the_committed(consumer, "tp") == 35


def test_records_of_a_partition_revoked_meanwhile_are_dropped_without_a_seek() -> None:
    revoked, active = _TP(("cdc", 0)), _TP(("cdc", 1))
    thread, client = _FetchingThread({active}), _Client(assigned={active})
    got = faustfix._put_back_inactive(
        thread.consumer, client, {revoked: [_Record(5)], active: [_Record(7)]}
    )
    assert set(got) == {active} and client.seeks == []


class _Queue:
    def __init__(self, full: bool = False) -> None:
        self._full = full

    def full(self) -> bool:
        return self._full


class _Flow:
    def __init__(self, active: bool = True) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


class _DeliveringConsumer:
    """What the read loop's wait reads of a consumer: its flow, the producer buffer, the
    streams' queues."""

    def __init__(self, *, suspended: bool = False, flow: bool = True, buffered: int = 0) -> None:
        self.suspend_flow = asyncio.Event()
        if suspended:
            self.suspend_flow.set()
        buffer = type("Buffer", (), {"size": buffered, "max_messages": 100})()
        topics = type("Topics", (), {"_topic_name_index": {"t": [_Channel()]}})()
        producer = type("Producer", (), {"buffer": buffer})()
        self.app = type("App", (), {"flow_control": _Flow(flow), "producer": producer})()
        self.app.topics = topics
        self.fallbacks = 0


class _Channel:
    def __init__(self, full: bool = False) -> None:
        self.queue = _Queue(full)


def test_the_read_loop_wait_is_installed() -> None:
    from faust.transport.consumer import Consumer

    assert Consumer.wait_first is faustfix._wait_first_unless_blocking


@pytest.mark.parametrize(
    ("consumer", "direct"),
    [
        (_DeliveringConsumer(), True),
        (_DeliveringConsumer(suspended=True), False),
        (_DeliveringConsumer(flow=False), False),
        (_DeliveringConsumer(buffered=101), False),
    ],
    ids=["free", "rebalancing", "flow-stopped", "producer-buffer-full"],
)
def test_a_delivery_that_cannot_wait_is_awaited_without_tasks(
    consumer: _DeliveringConsumer, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fallback(self: Any, *coros: Any, timeout: Any = None) -> str:
        self.fallbacks += 1
        for c in coros:
            c.close()
        return "fallback"

    monkeypatch.setattr(faustfix, "_service_wait_first", fallback)
    delivered: list[str] = []

    async def deliver() -> None:
        delivered.append("message")

    async def scenario() -> Any:
        return await faustfix._wait_first_unless_blocking(
            consumer, deliver(), consumer.suspend_flow.wait()
        )

    result = asyncio.run(scenario())
    if direct:
        assert result is None and delivered == ["message"] and consumer.fallbacks == 0
    else:
        assert result == "fallback" and delivered == [] and consumer.fallbacks == 1


def test_a_full_stream_queue_makes_the_delivery_wait_as_faust_has_it() -> None:
    consumer = _DeliveringConsumer()
    consumer.app.topics._topic_name_index["t"].append(_Channel(full=True))
    assert not faustfix._delivery_cannot_block(consumer)
    assert faustfix._delivery_cannot_block(_DeliveringConsumer())


def test_worker_consumers_fetch_with_a_short_wait() -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert (
        AIOKafkaConsumerThread._create_worker_consumer is faustfix._worker_consumer_fetching_often
    )
    assert faustfix.FETCH_MAX_WAIT_MS <= 250
