"""A sink following the snapshot topic at its own pace, with a consumer group of its own.

Each sink (Postgres, MongoDB) has its own group, ``<app>-sink-<name>``, so its offsets are its
own: a MongoDB that is down holds back the MongoDB listings and nothing else. Workers share a
sink's partitions through its group like they share the pipeline's through Faust's.

One batch at a time: take what the topic has (up to ``sink_batch_size``, waiting at most
``sink_batch_within_s``), keep each booking's newest message, write, and only then commit. A
batch that comes back full means the sink is behind, and the next may be twice as large, up to
``sink_batch_max``: the batches grow with the lag, and each booking is written once per batch
however many versions are queued for it.

While a sink is unavailable the follower retries the batch with capped backoff and keeps
polling meanwhile, so that it stays in its group and hears of a rebalance; the items of
partitions taken away are dropped from the batch (their new owner writes them), which leaves no
writer behind working for partitions it no longer holds. The sinks' guards make the rest safe:
an older snapshot never replaces a newer one, whoever writes it.

A follower is plain blocking code on confluent-kafka, psycopg and pymongo, run in a thread of
the worker (or of ``mis sink``): it shares neither the event loop nor a connection with Faust.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING
from uuid import UUID

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from schemas.snapshot import SnapshotRecord
from streams import metrics, topology
from streams.clock import clock
from streams.config import Settings
from streams.deadletter import parked
from streams.errors import SinkUnavailable
from streams.sinks.base import Item, Origin, Refusal, SnapshotSink, conflate

if TYPE_CHECKING:
    from streams.sinks.outbox import OutboxPublisher
    from streams.sinks.postgres import ChangeLog

log = logging.getLogger(__name__)


def decode(msg: Message) -> Item | str:
    """The item a snapshot message carries, or why it cannot be read."""
    origin = Origin(
        msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value()
    )
    try:
        booking_id = UUID((msg.key() or b"").decode())
    except (UnicodeDecodeError, ValueError):
        return f"unreadable snapshot key: {msg.key()!r}"
    value = msg.value()
    if value is None:
        return Item(booking_id, None, origin)
    try:
        record = SnapshotRecord.model_validate_json(value)
    except ValidationError as exc:
        return f"unreadable snapshot: {exc.errors()[0]['msg']}"
    if record.snapshot.booking_id != booking_id:
        return f"snapshot of booking {record.snapshot.booking_id} under key {booking_id}"
    return Item(booking_id, record, origin)


def readable(msg: Message, group: str) -> bool:
    """Whether a consumed ``msg`` is a message rather than an error (logged unless it only says
    a partition's end was reached or its topic does not exist yet)."""
    error = msg.error()
    if error is None:
        return True
    if error.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
        log.warning("consumer error group=%s error=%s", group, error)
    return False


class Follower:
    """Feeds one sink from the snapshot topic until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        sink: SnapshotSink,
        *,
        dead_letter_unreadable: bool,
        stop: threading.Event,
    ) -> None:
        self.settings, self.sink, self.stop = settings, sink, stop
        # Both followers read every message; one of them parks the unreadable ones.
        self.dead_letter_unreadable = dead_letter_unreadable
        self.topic = topology.snapshot_topic(settings.app_id)
        self.group = topology.sink_group(settings.app_id, sink.name)
        self._revoked: set[int] = set()
        self._carry: list[Message] = []
        self._room = settings.sink_batch_size
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        consumer = self._consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": self.group,
                "client.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(self.settings.session_timeout_s * 1000),
                "max.poll.interval.ms": 300_000,
                "topic.metadata.refresh.interval.ms": 5000,
                # A fetch is answered once 64 kB are there or 25 ms have passed, not at every
                # message: under a storm the broker answers a few fetches a second per sink
                # instead of one per produce request of the workers.
                "fetch.min.bytes": 65536,
                "fetch.wait.max.ms": 25,
            }
        )
        self._producer = Producer(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "linger.ms": 5}
        )
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("sink following topic=%s group=%s", self.topic, self.group)
        try:
            while not self.stop.is_set():
                self.step(consumer)
        finally:
            try:
                consumer.close()
            finally:
                self._producer.flush(10)
                self.sink.close()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked |= {tp.partition for tp in partitions}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A partition revoked and given back (a rebalance revokes every partition, then assigns
        # them again, most to the same members) is this follower's again: the messages of it
        # the batch holds are written and committed. Left out, they would be past the
        # consumer's position and never committed: the next batch would commit past them, and
        # a booking whose newest message was among them would keep an older listing.
        self._revoked -= {tp.partition for tp in partitions}

    def step(self, consumer: Consumer) -> None:
        """One batch: consume, conflate, write (retrying), dead-letter, commit."""
        room = max(1, self._room - len(self._carry))
        fresh = consumer.consume(num_messages=room, timeout=self.settings.sink_batch_within_s)
        # A full batch means the sink is behind: the next one may be twice as large, so that
        # a booking queued many times over is written once however many versions wait.
        full = len(fresh) >= room
        self._room = (
            min(self._room * 2, self.settings.sink_batch_max)
            if full
            else self.settings.sink_batch_size
        )
        carried = [m for m in self._carry if (m.partition() or 0) not in self._revoked]
        messages, self._carry = [*carried, *fresh], []
        good = [m for m in messages if self._readable(m)]
        if not good:
            return
        metrics.EVENTS_IN.labels(topic=self.topic).inc(len(good))
        items: list[Item] = []
        for msg in good:
            decoded = decode(msg)
            if isinstance(decoded, Item):
                items.append(decoded)
            elif self.dead_letter_unreadable:
                self._dead_letter(msg, decoded)
        refused = self._write(consumer, conflate(items))
        if refused is None:
            return  # stopping before the batch was written: it is not committed
        for item, reason in refused:
            self._dead_letter_item(item, reason)
        self._commit(consumer, good)
        records = [i.record for i in items if i.record is not None]
        if records:
            newest = max(r.evaluated_at for r in records)
            metrics.SINK_FRESHNESS.labels(sink=self.sink.name).set(
                (clock() - newest).total_seconds()
            )

    def _readable(self, msg: Message) -> bool:
        return readable(msg, self.group)

    def _write(self, consumer: Consumer, items: list[Item]) -> list[Refusal] | None:
        """Write ``items``, retrying while the sink is unavailable; the refused ones.

        None when the follower was told to stop before the batch could be written.
        """
        delay = 0.2
        while True:
            items = [i for i in items if i.origin.partition not in self._revoked]
            if not items:
                return []
            try:
                started = time.perf_counter()
                refused = self.sink.write(items)
                metrics.SINK_LATENCY.labels(sink=self.sink.name).observe(
                    time.perf_counter() - started
                )
                metrics.SINK_WRITES.labels(sink=self.sink.name).inc(len(items) - len(refused))
                return refused
            except SinkUnavailable as exc:
                metrics.SINK_RETRIES.labels(sink=self.sink.name).inc()
                log.warning(
                    "sink unavailable sink=%s batch=%d retry_in=%.1fs error=%s",
                    self.sink.name,
                    len(items),
                    delay,
                    exc,
                )
                self._wait(consumer, delay)
                delay = min(delay * 2, self.settings.sink_retry_max_s)
            except Exception as exc:  # a defect: one item at a time finds what it is about
                log.exception("sink failed sink=%s batch=%d", self.sink.name, len(items))
                if len(items) == 1:
                    return [(items[0], f"sink failed: {type(exc).__name__}: {exc}")]
                isolated: list[Refusal] = []
                for item in items:
                    one = self._write(consumer, [item])
                    if one is None:
                        return None
                    isolated += one
                return isolated
            if self.stop.is_set():
                return None

    def _wait(self, consumer: Consumer, seconds: float) -> None:
        """Sleep, polling so as to stay in the group and hear of rebalances."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            msg = consumer.poll(min(0.5, left))
            if msg is not None:
                self._carry.append(msg)  # in order after the batch; processed next
        # Stopping: the batch is not committed, and is redelivered to whoever follows.

    def _commit(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        ends: dict[int, int] = {}
        for msg in messages:
            partition = msg.partition() or 0
            if partition not in self._revoked:
                ends[partition] = max(ends.get(partition, 0), (msg.offset() or 0) + 1)
        if not ends:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(ends.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Partitions moved meanwhile: their new owner starts from the last commit and
            # writes the batch again, which the guards make harmless.
            log.warning("sink commit failed group=%s error=%s", self.group, exc)

    # ------------------------------------------------------------------ dead letters

    def _dead_letter(self, msg: Message, reason: str) -> None:
        self._send_dead_letter(
            Origin(
                msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value()
            ),
            reason,
        )

    def _dead_letter_item(self, item: Item, reason: str) -> None:
        self._send_dead_letter(item.origin, f"{self.sink.name}: {reason}")

    def _send_dead_letter(self, origin: Origin, reason: str) -> None:
        value = parked(
            reason, origin.topic, origin.partition, origin.offset, origin.key, origin.value
        )
        assert self._producer is not None
        self._producer.produce(
            topology.dead_letter_topic(self.settings.app_id), key=origin.key, value=value
        )
        # Before the offsets move past it: a dead letter is never lost to a crash.
        self._producer.flush(30)


SinkFactory = Callable[[], SnapshotSink]


class SinkThreads:
    """The followers of a process, one thread each, and the outbox's publisher if any; started
    and stopped together."""

    def __init__(
        self,
        settings: Settings,
        factories: dict[str, SinkFactory],
        publisher: OutboxPublisher | None = None,
    ) -> None:
        self.settings, self.factories, self.publisher = settings, factories, publisher
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, factory in self.factories.items():
            follower = Follower(
                self.settings,
                factory(),
                dead_letter_unreadable=dead_letters_unreadable(self.settings, name),
                stop=self.stop_event,
            )
            self._thread(f"sink-{name}", follower.run, name)
        if self.publisher is not None:
            self._thread("outbox", partial(self.publisher.run, self.stop_event), "outbox")

    def _thread(self, name: str, run: Callable[[], None], what: str) -> None:
        thread = threading.Thread(target=self._run, args=(run, what), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _run(self, run: Callable[[], None], what: str) -> None:
        while not self.stop_event.is_set():
            try:
                run()
            except Exception:
                log.exception("sink thread crashed sink=%s; restarting", what)
                self.stop_event.wait(2.0)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.publisher is not None:
            self.publisher.wake()  # out of its wait between rounds
        for thread in self.threads:
            thread.join(timeout)


def dead_letters_unreadable(settings: Settings, name: str) -> bool:
    """Whether sink ``name`` dead-letters unreadable snapshot messages: Postgres does; MongoDB
    only where no Postgres sink is configured, so that each such message is parked once."""
    return name == "postgres" or "postgres" not in settings.sink_names


def sink_factories(
    settings: Settings, names: Sequence[str] | None = None, changes: ChangeLog | None = None
) -> dict[str, SinkFactory]:
    """The sinks named (by default in ``settings.sinks``), Postgres first; the Postgres sink
    tells ``changes`` of what it changed."""
    from streams.sinks.listings import ListingSink
    from streams.sinks.postgres import PostgresSink

    known: dict[str, SinkFactory] = {
        "postgres": lambda: PostgresSink(settings.pg_dsn, changes=changes),
        "mongodb": lambda: ListingSink(settings),
    }
    wanted = settings.sink_names if names is None else tuple(names)
    return {name: known[name] for name in known if name in wanted}


def sink_threads(settings: Settings, names: Sequence[str] | None = None) -> SinkThreads:
    """The sinks named, the Postgres one writing listing changes to the outbox, and with it
    (unless MIS_CHANGE_PUBLISHER is off) the outbox's publisher, woken by its commits."""
    from streams.changes import ChangeOutbox, changes_topic
    from streams.sinks.outbox import OutboxPublisher

    factories = sink_factories(settings, names, None)
    if "postgres" not in factories:
        return SinkThreads(settings, factories)
    publisher = None
    if settings.change_publisher:
        publisher = OutboxPublisher(settings, changes_topic(settings.app_id))
    outbox = ChangeOutbox(settings, wake=publisher.wake if publisher is not None else None)
    return SinkThreads(settings, sink_factories(settings, names, outbox), publisher)
