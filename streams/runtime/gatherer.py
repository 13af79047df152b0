"""The gatherer: Debezium's reading topic read beside the agents, a message per location per read.

A thread of each worker (MIS_GATHER_READINGS) follows topology.GATHERED_TABLES' topics with a
consumer group of its own (``<app>-gather``): it reads what is there (up to
MIS_GATHER_WINDOW_S after the first event of a read), groups it per location (streams.gather),
sends each group to the location's partition of the location key space's topic, waits until
Kafka acknowledged every message, and only then commits the read's offsets. A gatherer that
dies before its commit leaves the read to whoever takes the partitions over, which sends it
again: the location applies changes by version, so the repeat changes nothing. An event that
cannot be decoded goes to the dead-letter topic with the reason, and the read goes on.

It is not a Faust agent: an agent's events cost the worker about the same each whatever they
carry, and the readings of a storm are the most numerous events the pipeline has. The
consumer and producer are librdkafka's (confluent-kafka), which fetch and batch outside the
interpreter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams import metrics, topology
from streams.config import Settings
from streams.deadletter import parked
from streams.gather import Grouping, held_back
from streams.routing import BROADCAST
from streams.sinks.follower import readable

log = logging.getLogger(__name__)

#: Events taken by one read at most: in a backlog, the more a read takes, the more changes
#: each location's message carries.
MAX_READ = 20_000
#: Events taken from the consumer at a time: a chunk is grouped (each change kept as about 320
#: bytes of JSON) and its messages (Debezium's envelope, about a kilobyte each) let go before
#: the next is taken, so a read of MAX_READ does not hold MAX_READ messages at once.
READ_CHUNK = 1_000
_RETRY_S = (0.5, 1.0, 2.0, 5.0)
#: How often the gatherer's lag is measured (a request to the broker per partition read).
LAG_EVERY_S = 5.0
#: How often the location agent's queue is measured (streams.gather.held_back).
AHEAD_EVERY_S = 0.5


class GatherFailed(Exception):
    """A read's messages were not all acknowledged: its offsets are not committed."""


@dataclass
class Read:
    """What one read brought, taken a chunk of messages at a time: their changes grouped per
    location, the offset after the last message of each partition, the events per topic, and
    the messages that could not be decoded (with the reason)."""

    table_of: Mapping[str, str]
    grouping: Grouping = field(default_factory=Grouping)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    bad: list[tuple[Message, str]] = field(default_factory=list)
    events: int = 0

    def take(self, messages: Iterable[Message]) -> None:
        for m in messages:
            topic = m.topic() or ""
            tp = (topic, m.partition() or 0)
            self.ends[tp] = max(self.ends.get(tp, 0), (m.offset() or 0) + 1)
            self.counts[topic] += 1
            self.events += 1
            bad = self.grouping.add(self.table_of[topic], m.value(), _timestamp(m))
            if bad is not None:
                self.bad.append((m, bad.reason))


class Gatherer:
    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings, self.stop = settings, stop
        app = settings.app_id
        self.table_of = {settings.cdc_topic(t): t for t in topology.gathered_tables(settings)}
        self.group = topology.gather_group(app)
        self.dead_letters = topology.dead_letter_topic(app)
        self.spaces = {s: topology.key_space_topic(app, s) for s in topology.KEY_SPACES}
        self.partitions = settings.partitions
        self.worker_group = topology.worker_group(app)
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._failed: list[str] = []
        self._lag_due = 0.0
        self._ahead_due = 0.0
        self._held: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Follow the topics until ``stop`` is set; after a failure, start again from the
        group's last commit."""
        failures = 0
        while not self.stop.is_set():
            try:
                self._follow()
                break
            except Exception as exc:  # a lost broker, a refused send: read again, later
                delay = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                failures += 1
                log.warning(
                    "gatherer failed group=%s retry_in=%.1fs error=%s: %s",
                    self.group,
                    delay,
                    type(exc).__name__,
                    exc,
                )
                self.stop.wait(delay)
        if self._producer is not None:
            self._producer.flush(10)

    def _follow(self) -> None:
        s = self.settings
        consumer = Consumer(
            {
                "bootstrap.servers": s.kafka_bootstrap,
                "group.id": self.group,
                "client.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(s.session_timeout_s * 1000),
                "max.poll.interval.ms": 300_000,
                "topic.metadata.refresh.interval.ms": 5000,
                # What librdkafka fetches ahead of the reads (64 MiB by default), and a fetch
                # (50 MiB): in a backlog the queue is always full. A read takes at most
                # MAX_READ events of under a kilobyte, and the broker is next door.
                "queued.max.messages.kbytes": 8192,
                "fetch.max.bytes": 4 * 2**20,
            }
        )
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": s.kafka_bootstrap,
                    "client.id": self.group,
                    "linger.ms": 5,
                    "enable.idempotence": True,
                    "compression.type": "snappy",
                }
            )
        consumer.subscribe(sorted(self.table_of))
        log.info("gatherer reading topics=%s group=%s", ",".join(sorted(self.table_of)), self.group)
        try:
            while not self.stop.is_set():
                self.step(consumer)
        finally:
            consumer.close()

    def read_of(self, messages: Iterable[Message]) -> Read:
        read = Read(self.table_of)
        read.take(m for m in messages if self._readable(m))
        return read

    def _read(self, consumer: Consumer) -> Read:
        # poll returns with the first message there; consume waits for its count or timeout.
        first = consumer.poll(0.5)
        if first is None:
            return Read(self.table_of)
        read = self.read_of([first])
        deadline = time.monotonic() + self.settings.gather_window_s
        taken = 1
        while taken < MAX_READ and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            chunk = consumer.consume(num_messages=min(READ_CHUNK, MAX_READ - taken), timeout=left)
            taken += len(chunk)
            read.take(m for m in chunk if self._readable(m))
            del chunk
        return read

    def step(self, consumer: Consumer) -> int:
        """One read: gather, send, wait for the acknowledgements, commit. The events read."""
        self.hold_back(consumer)
        read = self._read(consumer)
        self.report_lag(consumer)
        if not read.events:
            return 0
        self.send(read)
        self._commit(consumer, read.ends)
        for topic, n in read.counts.items():
            metrics.of_topic(metrics.EVENTS_IN, topic).inc(n)
        return read.events

    def hold_back(self, consumer: Any, now: float | None = None) -> None:
        """Every AHEAD_EVERY_S: pause the partitions whose location partition has more than
        MIS_GATHER_AHEAD messages the workers have not taken yet, and resume the others
        (streams.gather.held_back). Where the queue cannot be measured, nothing is held."""
        now = time.monotonic() if now is None else now
        if now < self._ahead_due:
            return
        self._ahead_due = now + AHEAD_EVERY_S
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        if not assigned:
            return
        try:
            queued = self.queued(consumer, {p for _, p in assigned})
        except (KafkaException, TimeoutError) as exc:
            log.info("gatherer: the location queue is not known group=%s error=%s", self.group, exc)
            queued = {}
        held = held_back(assigned, queued, self.settings.gather_ahead)
        if held:
            consumer.pause([TopicPartition(t, p) for t, p in sorted(held)])
        if assigned - held:
            consumer.resume([TopicPartition(t, p) for t, p in sorted(assigned - held)])
        if held != self._held & assigned:
            log.info(
                "gatherer holds back partitions=%s (the location agent has more than %d of "
                "their messages to take)",
                ",".join(f"{t}[{p}]" for t, p in sorted(held)) or "none",
                self.settings.gather_ahead,
            )
        self._held = held

    def queued(self, consumer: Any, partitions: set[int]) -> dict[int, int]:
        """How many messages of each location partition the workers have not taken yet: its
        log end minus the workers' committed offset (its first offset if they have none)."""
        topic = self.spaces["location"]
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap})
        wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
        request = ConsumerGroupTopicPartitions(self.worker_group, wanted)
        futures = self._admin.list_consumer_group_offsets([request], request_timeout=5)
        committed = {
            tp.partition: tp.offset
            for tp in futures[self.worker_group].result(timeout=5).topic_partitions
        }
        queued = {}
        for tp in wanted:
            low, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            queued[tp.partition] = max(0, high - max(low, committed.get(tp.partition, -1)))
        return queued

    def report_lag(self, consumer: Any, now: float | None = None) -> None:
        """Every LAG_EVERY_S, how far behind the log end each partition read is
        (``mis_gather_lag_messages``)."""
        now = time.monotonic() if now is None else now
        if now < self._lag_due:
            return
        self._lag_due = now + LAG_EVERY_S
        try:
            assigned = consumer.assignment()
            lags = {}
            for tp in consumer.position(assigned) if assigned else []:
                low, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
                position = tp.offset if tp.offset >= 0 else low
                lags[(tp.topic, tp.partition)] = max(0, high - position)
        except KafkaException as exc:
            log.info("gatherer lag not known group=%s error=%s", self.group, exc)
            return
        metrics.GATHER_LAG.clear()
        for (topic, partition), lag in lags.items():
            metrics.GATHER_LAG.labels(topic=topic, partition=str(partition)).set(lag)

    def send(self, read: Read) -> None:
        """Send what ``read`` brings to their keys; GatherFailed unless Kafka acknowledged
        every message."""
        producer = self._producer
        assert producer is not None
        gathering = read.grouping.finish()
        self._failed = []
        for out in gathering.out:
            topic = self.spaces[out.space]
            ts = out.timestamp_ms or 0
            if out.key == BROADCAST:
                for partition in range(self.partitions):
                    self._produce(topic, None, out.value, partition, ts)
            else:
                partition = topology.space_partition(out.space, out.key, self.partitions)
                self._produce(topic, out.key.encode(), out.value, partition, ts)
            metrics.of_topic(metrics.EVENTS_OUT, topic).inc()
        for m, reason in read.bad:
            key, value = m.key(), m.value()
            letter = parked(
                f"{reason} (key={_text(key)})",
                m.topic() or "",
                m.partition() or 0,
                m.offset() or 0,
                key if isinstance(key, bytes) else None,
                value,
            )
            self._produce(self.dead_letters, key if isinstance(key, bytes) else None, letter)
        left = producer.flush(self.settings.session_timeout_s)
        if left or self._failed:
            raise GatherFailed(
                f"{left} message(s) not delivered, {len(self._failed)} refused"
                + (f": {self._failed[0]}" if self._failed else "")
            )

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        producer = self._producer
        assert producer is not None
        kwargs: dict[str, Any] = {"on_delivery": self._delivered}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                producer.produce(topic, value=value, key=key, **kwargs)
                return
            except BufferError:  # the producer's queue is full: let it deliver some
                producer.poll(0.1)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def _readable(self, msg: Message) -> bool:
        return readable(msg, self.group)

    def _commit(self, consumer: Consumer, ends: Mapping[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(ends.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The partitions moved meanwhile: their new owner reads from the last commit and
            # sends the read again, which the locations ignore.
            log.warning("gatherer commit failed group=%s error=%s", self.group, exc)


def _timestamp(msg: Message) -> int | None:
    kind, ts = msg.timestamp()
    return None if kind == 0 or ts <= 0 else int(ts)  # 0: TIMESTAMP_NOT_AVAILABLE


def _text(key: Any) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return str(key)


class GathererThread:
    """The gatherer of a worker, in a thread of its own; stopped with the worker."""

    def __init__(self, settings: Settings) -> None:
        self.stop_event = threading.Event()
        self.gatherer = Gatherer(settings, self.stop_event)
        self.thread = threading.Thread(target=self._run, name="gatherer", daemon=True)

    def _run(self) -> None:
        try:
            self.gatherer.run()
        except Exception:
            log.exception("gatherer stopped")

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
