"""The Kafka plumbing the operations share: the consumer group, offsets, reading and producing.

Synchronous, on confluent-kafka (librdkafka): the operations run outside any Faust worker, and
the admin API is the one place that moves a consumer group's committed offsets.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from streams.ops.errors import OpsError

log = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass(frozen=True)
class Member:
    """An active member of a consumer group: one Faust worker."""

    member_id: str
    client_id: str
    host: str

    def __str__(self) -> str:
        return f"{self.client_id} on {self.host.lstrip('/')} (member {self.member_id})"


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class Kafka:
    def __init__(
        self,
        bootstrap: str,
        timeout_s: float = 30.0,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        """``client_config``: librdkafka settings for the admin client and the consumers."""
        self.bootstrap, self.timeout_s = bootstrap, timeout_s
        self.client_config = dict(client_config or {})
        self.admin = AdminClient({"bootstrap.servers": bootstrap, **self.client_config})

    def _wait(self, future: Any, what: str) -> Any:
        try:
            return future.result(timeout=self.timeout_s)
        except KafkaException as exc:
            raise OpsError(f"{what}: {exc.args[0] if exc.args else exc}") from exc
        except TimeoutError as exc:
            raise OpsError(f"{what}: no answer from Kafka at {self.bootstrap}") from exc

    def partitions(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of the topics that exist (missing ones are left out)."""
        try:
            metadata = self.admin.list_topics(timeout=self.timeout_s).topics
        except KafkaException as exc:
            raise OpsError(
                f"Kafka at {self.bootstrap} is not reachable ({exc}); is the stack up?"
            ) from exc
        return {
            t: len(metadata[t].partitions)
            for t in topics
            if t in metadata and metadata[t].error is None
        }

    def ensure_topic(self, name: str, partitions: int, config: Mapping[str, str]) -> None:
        """Create ``name`` unless it exists (its existing settings are left alone)."""
        if name in self.partitions([name]):
            return
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config))],
            request_timeout=self.timeout_s,
        )
        try:
            futures[name].result(timeout=self.timeout_s)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            raise OpsError(f"could not create topic {name}: {exc}") from exc
        log.info("topic created topic=%s partitions=%d", name, partitions)

    def members(self, group: str) -> list[Member]:
        futures = self.admin.describe_consumer_groups([group], request_timeout=self.timeout_s)
        description = self._wait(futures[group], f"describing consumer group {group}")
        return [Member(m.member_id, m.client_id, m.host) for m in description.members]

    def committed(self, group: str) -> dict[TP, int]:
        """The group's committed offsets; partitions it never committed are left out."""
        futures = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout_s
        )
        result = self._wait(futures[group], f"listing offsets of consumer group {group}")
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in result.topic_partitions
            if tp.offset >= 0 and tp.error is None
        }

    def _list_offsets(self, tps: Iterable[TP], spec: OffsetSpec) -> dict[TP, int]:
        wanted = {TopicPartition(t, p): spec for t, p in tps}
        if not wanted:
            return {}
        futures = self.admin.list_offsets(wanted, request_timeout=self.timeout_s)
        return {
            (tp.topic, tp.partition): self._wait(f, f"offsets of {tp.topic}[{tp.partition}]").offset
            for tp, f in futures.items()
        }

    def watermarks(self, tps: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        """(earliest, end) offsets of each partition: the end is the next offset to be written."""
        tps = list(tps)
        low = self._list_offsets(tps, OffsetSpec.earliest())
        high = self._list_offsets(tps, OffsetSpec.latest())
        return {tp: (low[tp], high[tp]) for tp in tps}

    def offsets_for_time(self, tps: Iterable[TP], timestamp_ms: int) -> dict[TP, int]:
        """The first offset of each partition whose message is at or after ``timestamp_ms``.

        Kafka answers -1 (OFFSET_END) for a partition with nothing that recent: its end.
        """
        consumer = self.consumer()
        try:
            query = [TopicPartition(t, p, timestamp_ms) for t, p in tps]
            answer = consumer.offsets_for_times(query, timeout=self.timeout_s)
        except KafkaException as exc:
            raise OpsError(f"looking up offsets for a time: {exc}") from exc
        finally:
            consumer.close()
        found = {(tp.topic, tp.partition): tp.offset for tp in answer}
        ends = self.watermarks(k for k, v in found.items() if v < 0 or v == OFFSET_END)
        return {k: (ends[k][1] if k in ends else v) for k, v in found.items()}

    def alter_offsets(self, group: str, offsets: Mapping[TP, int]) -> None:
        """Set the group's committed offsets; Kafka refuses while the group has members."""
        if not offsets:
            return
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        )
        futures = self.admin.alter_consumer_group_offsets([request], request_timeout=self.timeout_s)
        result = self._wait(futures[group], f"moving the offsets of consumer group {group}")
        failed = [
            f"{tp.topic}[{tp.partition}]: {tp.error}"
            for tp in result.topic_partitions
            if tp.error is not None
        ]
        if failed:
            raise OpsError(f"Kafka refused some offsets of group {group}: " + "; ".join(failed))
        log.info("offsets moved group=%s partitions=%d", group, len(offsets))

    def consumer(self, **extra: Any) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # A throwaway group that never commits: reading must not disturb any group.
                "group.id": f"mis-ops-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                **self.client_config,
                **extra,
            }
        )

    def read(self, ranges: Mapping[TP, tuple[int, int]], idle_s: float = 30.0) -> Iterator[Message]:
        """Every message of each partition from ``start`` up to (not including) ``end``.

        Partitions are read concurrently, each in its own order. A compacted partition may have
        no message left at ``end - 1``: the end-of-partition event closes it instead.
        """
        todo = {tp: (start, end) for tp, (start, end) in ranges.items() if end > start}
        if not todo:
            return
        consumer = self.consumer(**{"enable.partition.eof": True})
        try:
            consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in todo.items()])
            last_seen = time.monotonic()
            while todo:
                msg = consumer.poll(0.5)
                if msg is None:
                    if time.monotonic() - last_seen > idle_s:
                        raise OpsError(f"reading stalled with {len(todo)} partitions unread")
                    continue
                last_seen = time.monotonic()
                tp = (str(msg.topic()), int(msg.partition() or 0))
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.pop(tp, None)
                        continue
                    raise OpsError(f"reading {tp[0]}[{tp[1]}]: {error}")
                if tp not in todo:
                    continue
                offset = msg.offset() or 0
                if offset >= todo[tp][1]:
                    todo.pop(tp)
                    continue
                yield Message(tp[0], tp[1], offset, msg.key(), msg.value(), msg.timestamp()[1])
                if offset + 1 >= todo[tp][1]:
                    todo.pop(tp)
        finally:
            consumer.close()

    def sender(self) -> Sender:
        return Sender(self.bootstrap)


class Sender:
    """A producer that counts what Kafka acknowledged and raises on any delivery failure."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 20,
            }
        )
        self.sent = 0
        self._failures: list[str] = []

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}[{msg.partition()}]: {err}")
        else:
            self.sent += 1

    def send(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, partition=partition, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> int:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise OpsError(f"{remaining} messages were not delivered within {timeout_s:.0f}s")
        if self._failures:
            raise OpsError(
                f"{len(self._failures)} messages failed: " + "; ".join(self._failures[:5])
            )
        return self.sent
