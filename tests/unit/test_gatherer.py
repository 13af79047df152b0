"""The gatherer's Kafka side (streams.runtime.gatherer) with stand-in clients: where its messages
go, what it dead-letters, that a read is committed only once every message was acknowledged,
and its lag. The real clients are in tests/integration/test_gatherer.py."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams import metrics, topology
from streams.config import Settings
from streams.messages import LOCATION_MSG, Gathered
from streams.runtime.gatherer import Gatherer, GatherFailed
from tests.unit.test_gather import A, B, reading

SETTINGS = Settings(app_id="gather-unit", partitions=4)
TOPIC = SETTINGS.cdc_topic("sensor_readings")


class Msg:
    def __init__(self, value: bytes | None, offset: int, partition: int = 0) -> None:
        self._value, self._offset, self._partition = value, offset, partition

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return f'{{"id":{self._offset}}}'.encode()

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._offset)

    def error(self) -> None:
        return None


class Producer:
    def __init__(self, refuse: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refuse = refuse
        self._pending: list[tuple[Any, dict[str, Any]]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        record = {"topic": topic, "key": key, "value": value, **kwargs}
        self.sent.append(record)
        self._pending.append((kwargs["on_delivery"], record))

    def flush(self, timeout: float) -> int:
        for callback, record in self._pending:
            error = KafkaError(KafkaError._MSG_TIMED_OUT) if self.refuse else None
            topic = record["topic"]
            callback(
                error,
                type("M", (), {"topic": lambda s, t=topic: t, "partition": lambda s: 0})(),
            )
        self._pending = []
        return 0


def gatherer(producer: Producer) -> Gatherer:
    g = Gatherer(SETTINGS, threading.Event())
    g._producer = producer  # type: ignore[assignment]
    return g


def test_each_location_gets_one_message_in_its_own_partition() -> None:
    producer = Producer()
    messages = [Msg(reading(1, A, 10), 0), Msg(reading(2, B, 11), 1), Msg(reading(3, A, 12), 2)]
    g = gatherer(producer)
    g.send(g.read_of(messages))
    location_topic = topology.key_space_topic(SETTINGS.app_id, "location")
    assert {r["topic"] for r in producer.sent} == {location_topic}
    by_key = {r["key"].decode(): r for r in producer.sent}
    assert sorted(by_key) == sorted([A, B])
    for key, record in by_key.items():
        assert record["partition"] == topology.space_partition("location", key, 4)
    msg = LOCATION_MSG.validate_json(by_key[A]["value"])
    assert isinstance(msg, Gathered) and [c.row.id for c in msg.changes] == [1, 3]
    assert by_key[A]["timestamp"] == 1_000  # the oldest of its events


def test_an_unreadable_event_goes_to_the_dead_letters_with_its_origin() -> None:
    producer = Producer()
    g = gatherer(producer)
    g.send(g.read_of([Msg(b'{"op": "c"', 7, partition=2), Msg(reading(1, A, 10), 8)]))
    (letter,) = [
        r for r in producer.sent if r["topic"] == topology.dead_letter_topic("gather-unit")
    ]
    record = json.loads(letter["value"])
    assert (record["topic"], record["partition"], record["offset"]) == (TOPIC, 2, 7)
    assert "sensor_readings" in record["reason"] and '{"id":7}' in record["reason"]
    assert letter["key"] == b'{"id":7}'


def test_a_read_not_acknowledged_fails_and_is_not_committed() -> None:
    class Consumer:
        committed: list[Any] = []

        def assignment(self) -> list[Any]:
            return []

        def commit(self, offsets: Any, asynchronous: bool) -> None:
            self.committed.append(offsets)

    consumer = Consumer()
    g = gatherer(Producer(refuse=True))
    g._read = lambda c: g.read_of([Msg(reading(1, A, 10), 0)])  # type: ignore[method-assign]
    with pytest.raises(GatherFailed, match="refused"):
        g.step(consumer)  # type: ignore[arg-type]
    assert consumer.committed == []
    g._producer = Producer()  # type: ignore[assignment]
    assert g.step(consumer) == 1  # type: ignore[arg-type]
    ((tp,),) = consumer.committed
    assert (tp.topic, tp.partition, tp.offset) == (TOPIC, 0, 1)


def test_a_read_takes_its_messages_a_chunk_at_a_time_and_keeps_their_changes() -> None:
    from streams.runtime import gatherer as module

    locations = [A, B]
    waiting = [
        Msg(reading(n, locations[n % 2], n), n, partition=n % 2) for n in range(2 * 1000 + 501)
    ]
    asked: list[int] = []

    class Consumer:
        def poll(self, timeout: float) -> Msg:
            return waiting.pop(0)

        def consume(self, num_messages: int, timeout: float) -> list[Msg]:
            asked.append(num_messages)
            chunk = waiting[:num_messages]
            del waiting[:num_messages]
            if not waiting:
                g.stop.set()  # the read would wait out its window for more
            return chunk

    g = gatherer(Producer())
    g.settings = SETTINGS.model_copy(update={"gather_window_s": 60.0})
    read = g._read(Consumer())  # type: ignore[arg-type]
    assert not waiting and read.events == 2501
    assert max(asked) == module.READ_CHUNK  # never more than a chunk held at once
    assert read.ends == {(TOPIC, 0): 2501, (TOPIC, 1): 2500}
    gathered = read.grouping.finish().out
    assert sorted(o.key for o in gathered) == sorted(locations * 2)  # 1,000 changes a message
    assert sum(o.changes for o in gathered) == 2501


def test_the_lag_is_the_log_end_minus_the_position_of_each_partition_read() -> None:
    class Consumer:
        def assignment(self) -> list[TopicPartition]:
            return [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]

        def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
            return [TopicPartition(TOPIC, 0, 40), TopicPartition(TOPIC, 1, -1001)]

        def get_watermark_offsets(self, tp: TopicPartition, **kwargs: Any) -> tuple[int, int]:
            return (5, 100) if tp.partition == 0 else (10, 12)

    g = gatherer(Producer())
    g.report_lag(Consumer(), now=100.0)

    def lag(partition: int) -> float:
        return metrics.GATHER_LAG.labels(topic=TOPIC, partition=str(partition))._value.get()

    assert (lag(0), lag(1)) == (60, 2)  # a partition never read: from its first offset


class Paused:
    """A consumer with two partitions of the reading topic, recording pauses and resumes."""

    def __init__(self) -> None:
        self.paused: set[int] = set()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 3)]

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in tps}


def test_a_partition_whose_location_queue_is_long_is_held_back_until_it_is_taken() -> None:
    g = gatherer(Producer())
    queues = {0: SETTINGS.gather_ahead + 1, 3: 0}
    g.queued = lambda consumer, partitions: {p: queues[p] for p in partitions}  # type: ignore[method-assign]
    consumer = Paused()
    g.hold_back(consumer, now=10.0)
    assert consumer.paused == {0}
    queues[0] = SETTINGS.gather_ahead
    g.hold_back(consumer, now=10.1)  # measured every AHEAD_EVERY_S, not at every read
    assert consumer.paused == {0}
    g.hold_back(consumer, now=11.0)
    assert consumer.paused == set()


def test_a_queue_that_cannot_be_measured_holds_nothing_back() -> None:
    g = gatherer(Producer())
    g.queued = lambda consumer, partitions: {p: 10**6 for p in partitions}  # type: ignore[method-assign]
    consumer = Paused()
    g.hold_back(consumer, now=10.0)
    assert consumer.paused == {0, 3}

    def unreachable(consumer: Any, partitions: Any) -> dict[int, int]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    g.queued = unreachable  # type: ignore[method-assign]
    g.hold_back(consumer, now=11.0)
    assert consumer.paused == set()


def test_the_location_queue_is_the_log_end_minus_the_workers_commit() -> None:
    class Admin:
        def list_consumer_group_offsets(self, requests: Any, **kwargs: Any) -> dict[str, Any]:
            (request,) = requests
            assert request.group_id == topology.worker_group(SETTINGS.app_id)
            result = type(
                "R",
                (),
                {
                    "topic_partitions": [
                        TopicPartition(tp.topic, tp.partition, 70 if tp.partition == 0 else -1001)
                        for tp in request.topic_partitions
                    ]
                },
            )()
            future = type("F", (), {"result": lambda self, timeout: result})()
            return {request.group_id: future}

    class Watermarks:
        def get_watermark_offsets(self, tp: TopicPartition, **kwargs: Any) -> tuple[int, int]:
            assert tp.topic == topology.key_space_topic(SETTINGS.app_id, "location")
            return (20, 100)

    g = gatherer(Producer())
    g._admin = Admin()  # type: ignore[assignment]
    # committed at 70: 30 to take; never committed: from the first offset, 80
    assert g.queued(Watermarks(), {0, 1}) == {0: 30, 1: 80}
