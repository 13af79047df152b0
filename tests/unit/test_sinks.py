"""The sinks' runtime without a broker: conflation, the newest-wins decision, and a follower's
batch (retry while unavailable, rebalance, stop, dead letters, commits)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from schemas.snapshot import SnapshotRecord
from streams.config import Settings
from streams.errors import SinkUnavailable
from streams.samples import booking, booking_record
from streams.sinks.base import Item, Origin, Refusal, conflate
from streams.sinks.follower import Follower, decode
from streams.sinks.listings import Held, decide

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOPIC = "market-snapshots-snapshots"


def record(booking_id: UUID, version: int, *, quantity: int = 100, at: datetime = NOW) -> Any:
    return booking_record(booking(booking_id, "tomato", quantity), version, at)


def held(r: SnapshotRecord) -> Held:
    return Held(r.source_version, r.evaluated_at, r.content_hash)


# --- conflation ----------------------------------------------------------------------------


def item(
    booking_id: UUID, offset: int, rec: SnapshotRecord | None = None, partition: int = 0
) -> Item:
    return Item(booking_id, rec, Origin(TOPIC, partition, offset, str(booking_id).encode(), b"x"))


def test_conflation_keeps_the_newest_item_of_each_booking_in_order_of_last_appearance() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    batch = [item(a, 0), item(b, 1), item(a, 2), item(c, 3), item(b, 4)]
    assert [(i.booking_id, i.origin.offset) for i in conflate(batch)] == [(a, 2), (c, 3), (b, 4)]


def test_a_tombstone_after_a_snapshot_wins_and_a_snapshot_after_a_tombstone_wins() -> None:
    a, b = uuid4(), uuid4()
    batch = [item(a, 0, record(a, 1)), item(a, 1, None), item(b, 2, None), item(b, 3, record(b, 2))]
    out = {i.booking_id: i.record for i in conflate(batch)}
    assert out[a] is None and out[b] is not None


# --- newest wins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "auto", "force", "expected"),
    [
        (None, True, False, "upsert"),
        (None, False, False, "existing"),
        (None, False, True, "upsert"),
        ("older", True, False, "upsert"),
        ("older", False, False, "upsert"),
        ("same", True, False, None),
        ("same", True, True, "upsert"),
        ("newer", True, False, None),
        ("newer", True, True, None),
        ("earlier evaluation", True, False, "upsert"),
        ("later evaluation", True, True, None),
    ],
)
def test_which_snapshot_may_replace_a_listing(
    stored: str | None, auto: bool, force: bool, expected: str | None
) -> None:
    bid = uuid4()
    mine = record(bid, 5)
    holdings = {
        None: None,
        "older": held(record(bid, 4, quantity=7)),
        "same": held(mine),
        "newer": held(record(bid, 6, quantity=8)),
        "earlier evaluation": held(record(bid, 5, quantity=9, at=NOW - timedelta(hours=1))),
        "later evaluation": held(record(bid, 5, quantity=9, at=NOW + timedelta(hours=1))),
    }
    assert decide(mine, holdings[stored], auto_publish=auto, force=force) == expected


# --- decoding ------------------------------------------------------------------------------


@dataclass
class Msg:
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _topic: str = TOPIC

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None


def msg(partition: int, offset: int, rec: SnapshotRecord | None, key: UUID | None = None) -> Msg:
    bid = key or (rec.snapshot.booking_id if rec else uuid4())
    value = None if rec is None else rec.model_dump_json().encode()
    return Msg(partition, offset, str(bid).encode(), value)


def test_decoding_a_snapshot_a_tombstone_and_what_cannot_be_read() -> None:
    bid = uuid4()
    rec = record(bid, 1)
    decoded = decode(msg(1, 7, rec))  # type: ignore[arg-type]
    assert isinstance(decoded, Item) and decoded.record == rec and decoded.origin.offset == 7
    gone = decode(msg(0, 1, None, key=bid))  # type: ignore[arg-type]
    assert isinstance(gone, Item) and gone.record is None and gone.booking_id == bid
    assert "key" in str(decode(Msg(0, 1, b"not-a-uuid", b"{}")))  # type: ignore[arg-type]
    assert "unreadable snapshot" in str(decode(Msg(0, 1, str(bid).encode(), b"{}")))  # type: ignore[arg-type]
    other = decode(msg(0, 1, rec, key=uuid4()))  # type: ignore[arg-type]
    assert isinstance(other, str) and "under key" in other


# --- a follower's batch ----------------------------------------------------------------------


@dataclass
class FakeConsumer:
    """Hands out prepared batches; on the n-th poll during a retry it revokes partitions."""

    batches: list[list[Msg]]
    follower: Follower | None = None
    revoke_on_poll: set[int] = field(default_factory=set)
    #: a rebalance within the next consume: revoke these partitions, then assign them again
    rebalance_on_consume: set[int] = field(default_factory=set)
    commits: list[list[tuple[int, int]]] = field(default_factory=list)
    polls: int = 0

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        if self.rebalance_on_consume and self.follower is not None:
            from confluent_kafka import TopicPartition

            tps = [TopicPartition(TOPIC, p) for p in self.rebalance_on_consume]
            self.follower._on_revoke(self, tps)  # type: ignore[arg-type]
            self.follower._on_assign(self, tps)  # type: ignore[arg-type]
            self.rebalance_on_consume = set()
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout: float) -> None:
        self.polls += 1
        if self.revoke_on_poll and self.follower is not None:
            from confluent_kafka import TopicPartition

            self.follower._on_revoke(
                self,  # type: ignore[arg-type]
                [TopicPartition(TOPIC, p) for p in self.revoke_on_poll],
            )
            self.revoke_on_poll = set()

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])


@dataclass
class FakeSink:
    """Unavailable for the first ``failures`` writes; refuses the bookings in ``refuse``."""

    failures: int = 0
    refuse: set[UUID] = field(default_factory=set)
    written: list[list[Item]] = field(default_factory=list)
    name: str = "fake"
    stop_on_failure: threading.Event | None = None

    def write(self, items: list[Item]) -> list[Refusal]:
        if self.failures:
            self.failures -= 1
            if self.stop_on_failure is not None:
                self.stop_on_failure.set()
            raise SinkUnavailable("down")
        self.written.append(list(items))
        return [(i, "refused") for i in items if i.booking_id in self.refuse]

    def close(self) -> None:
        pass


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, Any]] = field(default_factory=list)

    def produce(self, topic: str, key: bytes | None, value: Any) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float) -> int:
        return 0


def follower(sink: FakeSink, consumer: FakeConsumer) -> tuple[Follower, FakeProducer]:
    settings = Settings(sink_retry_max_s=0.01, sink_batch_within_s=0.01)
    f = Follower(settings, sink, dead_letter_unreadable=True, stop=threading.Event())
    producer = FakeProducer()
    f._producer = producer  # type: ignore[assignment]
    consumer.follower = f
    return f, producer


def test_a_batch_is_written_conflated_then_committed_per_partition() -> None:
    a, b = uuid4(), uuid4()
    batch = [msg(0, 10, record(a, 1)), msg(1, 4, record(b, 1)), msg(0, 11, record(a, 2))]
    consumer, sink = FakeConsumer([batch]), FakeSink()
    f, _ = follower(sink, consumer)
    f.step(consumer)  # type: ignore[arg-type]
    (written,) = sink.written
    assert {i.booking_id: i.origin.offset for i in written} == {a: 11, b: 4}
    assert consumer.commits == [[(0, 12), (1, 5)]]


def test_an_unavailable_sink_is_retried_until_written_and_only_then_committed() -> None:
    a = uuid4()
    consumer, sink = FakeConsumer([[msg(2, 3, record(a, 1))]]), FakeSink(failures=3)
    f, _ = follower(sink, consumer)
    f.step(consumer)  # type: ignore[arg-type]
    assert len(sink.written) == 1 and consumer.commits == [[(2, 4)]]
    assert consumer.polls >= 3  # it kept polling, so it stayed in its group


def test_items_of_partitions_taken_away_meanwhile_are_neither_written_nor_committed() -> None:
    a, b = uuid4(), uuid4()
    batch = [msg(0, 1, record(a, 1)), msg(1, 1, record(b, 1))]
    consumer, sink = FakeConsumer([batch], revoke_on_poll={1}), FakeSink(failures=1)
    f, _ = follower(sink, consumer)
    f.step(consumer)  # type: ignore[arg-type]
    (written,) = sink.written
    assert [i.booking_id for i in written] == [a]
    assert consumer.commits == [[(0, 2)]]


def test_items_of_partitions_revoked_and_given_back_are_written_and_committed() -> None:
    """An eager rebalance within a consume: every partition revoked, then assigned again."""
    a, b = uuid4(), uuid4()
    consumer, sink = FakeConsumer([[msg(0, 1, record(a, 1)), msg(1, 7, record(b, 1))]]), FakeSink()
    consumer.rebalance_on_consume = {0, 1}
    f, _ = follower(sink, consumer)
    f.step(consumer)  # type: ignore[arg-type]
    (written,) = sink.written
    assert {i.booking_id for i in written} == {a, b}
    assert consumer.commits == [[(0, 2), (1, 8)]]


def test_a_partition_taken_away_stays_away_across_batches_until_given_back() -> None:
    a, b = uuid4(), uuid4()
    consumer, sink = FakeConsumer([[msg(1, 1, record(a, 1))]], revoke_on_poll={1}), FakeSink(1)
    f, _ = follower(sink, consumer)
    f.step(consumer)  # type: ignore[arg-type]
    assert sink.written == [] and consumer.commits == []
    consumer.batches.append([msg(1, 2, record(b, 1))])  # fetched before the revoke took effect
    f.step(consumer)  # type: ignore[arg-type]
    assert sink.written == [] and consumer.commits == []
    consumer.rebalance_on_consume = {1}
    consumer.batches.append([msg(1, 1, record(a, 1))])
    f.step(consumer)  # type: ignore[arg-type]
    assert [i.booking_id for i in sink.written[0]] == [a] and consumer.commits == [[(1, 2)]]


def test_a_follower_told_to_stop_while_retrying_commits_nothing() -> None:
    consumer = FakeConsumer([[msg(0, 1, record(uuid4(), 1))]])
    sink = FakeSink(failures=100)
    f, _ = follower(sink, consumer)
    sink.stop_on_failure = f.stop
    f.step(consumer)  # type: ignore[arg-type]
    assert sink.written == [] and consumer.commits == []


def test_refused_and_unreadable_messages_are_dead_lettered_once_and_the_rest_committed() -> None:
    a, b = uuid4(), uuid4()
    batch = [
        msg(0, 1, record(a, 1)),
        Msg(0, 2, str(b).encode(), b"garbage"),
        msg(0, 3, record(b, 1)),
    ]
    consumer, sink = FakeConsumer([batch]), FakeSink(refuse={a})
    f, producer = follower(sink, consumer)
    f.step(consumer)  # type: ignore[arg-type]
    reasons = [value.decode() for _, _, value in producer.sent]
    assert len(reasons) == 2
    assert any("unreadable snapshot" in r for r in reasons)
    assert any("fake: refused" in r for r in reasons)
    assert consumer.commits == [[(0, 4)]]


def test_a_defect_in_a_sink_isolates_the_item_it_is_about() -> None:
    a, b = uuid4(), uuid4()

    class Picky(FakeSink):
        def write(self, items: list[Item]) -> list[Refusal]:
            if any(i.booking_id == a for i in items):
                raise KeyError("boom")
            return super().write(items)

    consumer, sink = FakeConsumer([[msg(0, 1, record(a, 1)), msg(0, 2, record(b, 1))]]), Picky()
    f, producer = follower(sink, consumer)
    f.step(consumer)  # type: ignore[arg-type]
    assert [[i.booking_id for i in w] for w in sink.written] == [[b]]
    assert len(producer.sent) == 1 and "KeyError" in producer.sent[0][2].decode()
    assert consumer.commits == [[(0, 3)]]


@dataclass
class QueueConsumer(FakeConsumer):
    """Hands out up to ``num_messages`` of a queue, recording what was asked for."""

    queue: list[Msg] = field(default_factory=list)
    asked: list[int] = field(default_factory=list)

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        self.asked.append(num_messages)
        taken, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return taken


def test_batches_grow_while_the_sink_is_behind_and_shrink_once_it_has_caught_up() -> None:
    bookings = [uuid4() for _ in range(50)]
    queue = [msg(0, n, record(bookings[n % 50], n + 1)) for n in range(3000)]
    consumer, sink = QueueConsumer([], queue=queue), FakeSink()
    settings = Settings(sink_batch_size=100, sink_batch_max=1000, sink_batch_within_s=0.01)
    f = Follower(settings, sink, dead_letter_unreadable=True, stop=threading.Event())
    f._producer = FakeProducer()  # type: ignore[assignment]
    for _ in range(8):
        f.step(consumer)  # type: ignore[arg-type]
    assert consumer.asked == [100, 200, 400, 800, 1000, 1000, 100, 100]
    # However many versions were queued, each batch wrote each booking once.
    assert all(len(w) == len({i.booking_id for i in w}) <= 50 for w in sink.written)
    assert consumer.commits[-1] == [(0, 3000)]


@pytest.mark.parametrize(
    ("env", "publisher", "outbox"),
    [
        ({}, True, True),
        ({"change_publisher": False}, False, True),
        ({"sinks": "mongodb"}, False, False),
    ],
)
def test_the_outbox_publisher_runs_beside_the_postgres_sink_unless_switched_off(
    env: dict[str, Any], publisher: bool, outbox: bool
) -> None:
    from streams.sinks.follower import sink_threads
    from streams.sinks.postgres import PostgresSink

    threads = sink_threads(Settings(**env))
    assert (threads.publisher is not None) == publisher
    sinks = [factory() for factory in threads.factories.values()]
    try:
        postgres = [s for s in sinks if isinstance(s, PostgresSink)]
        assert bool(postgres and postgres[0]._changes is not None) == outbox
    finally:
        for sink in sinks:
            sink.close()


def test_the_history_is_kept_180_days_by_default_and_0_keeps_it_forever() -> None:
    assert Settings().history_keep_days == 180
    assert Settings(history_keep_days=0).history_keep_days == 0
    with pytest.raises(ValueError):
        Settings(history_keep_days=-1)
