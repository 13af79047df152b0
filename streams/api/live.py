"""Live push: the listing changes as a server-sent event stream, and a page that shows them.

``GET /storage-guard/listing-changes/stream`` reads ``<app>-listing-changes`` with a
confluent-kafka consumer of its own, in a thread of its own (no group: it assigns every
partition itself and commits nothing), and writes each change that passes the filters
(``booking_id``, ``location_id``, ``vendor_id``) as an SSE event. Each event's id is the
stream's position, ``<topic>:<partition>:<next offset>`` for every partition, comma-separated:
a client that reconnects with it as ``Last-Event-ID`` (browsers do so by themselves) misses
nothing and sees nothing twice, save what changed between a filter's events. Without one, the
stream starts at ``?since=`` (an ISO time) or else at the end. A first ``ready`` event carries
the starting position; a comment every 15 s keeps idle connections open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any

from aiohttp import web
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.api.errors import Invalid
from streams.api.history import parse_since
from streams.api.live_page import PAGE
from streams.api.requests import parse_uuid
from streams.changes import changes_topic
from streams.config import Settings

log = logging.getLogger(__name__)

STREAM_ROUTE = "/storage-guard/listing-changes/stream"
PAGE_ROUTE = "/storage-guard/live"
FILTERS = ("booking_id", "location_id", "vendor_id")
KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000

Positions = dict[int, int]


def format_position(topic: str, positions: Positions) -> str:
    return ",".join(f"{topic}:{p}:{o}" for p, o in sorted(positions.items()))


def parse_position(topic: str, text: str) -> Positions:
    """The partitions' next offsets of an event id; one of another topic is refused."""
    positions: Positions = {}
    try:
        for part in text.split(","):
            name, partition, offset = part.strip().rsplit(":", 2)
            if name != topic or int(partition) < 0 or int(offset) < 0:
                raise ValueError(part)
            positions[int(partition)] = int(offset)
    except ValueError as exc:
        raise Invalid(
            f"Last-Event-ID must be an id this stream sent ({topic}:<partition>:<offset>,...)",
            [{"loc": ["Last-Event-ID"], "msg": "not a position of this stream"}],
        ) from exc
    return positions


class Reader(threading.Thread):
    """Reads the topic from a position and hands (partition, offset, value) to the event loop."""

    def __init__(
        self,
        settings: Settings,
        start: Positions | None,
        since: datetime | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(name="live-reader", daemon=True)
        self.settings, self.start_at, self.since, self.loop = settings, start, since, loop
        self.topic = changes_topic(settings.app_id)
        self.queue: asyncio.Queue[tuple[int, int, bytes | None] | Positions | str] = asyncio.Queue(
            QUEUE_SIZE
        )
        self.stopping = threading.Event()

    def _hand(self, item: tuple[int, int, bytes | None] | Positions | str) -> bool:
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while not self.stopping.is_set():
            try:
                future.result(timeout=1.0)
                return True
            except FutureTimeout:
                continue  # the client reads slowly: wait, the queue is bounded
        future.cancel()
        return False

    def _positions(self, consumer: Consumer) -> Positions:
        metadata = consumer.list_topics(self.topic, timeout=10)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise KafkaException(f"topic {self.topic} is not available")
        positions: Positions = {}
        stamps: list[TopicPartition] = []
        for p in sorted(topic.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            if self.start_at is not None:
                # A partition the id does not name had nothing yet when it was sent: from its start.
                positions[p] = min(max(self.start_at.get(p, low), low), high)
            elif self.since is not None:
                stamps.append(TopicPartition(self.topic, p, int(self.since.timestamp() * 1000)))
                positions[p] = high
            else:
                positions[p] = high
        if stamps:
            for tp in consumer.offsets_for_times(stamps, timeout=10):
                if tp.offset >= 0:
                    positions[tp.partition] = tp.offset
        return positions

    def run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"{self.settings.app_id}-live-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
        try:
            positions = self._positions(consumer)
            consumer.assign([TopicPartition(self.topic, p, o) for p, o in positions.items()])
            if not self._hand(positions):
                return
            while not self.stopping.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("live stream consumer error=%s", error)
                    continue
                item = (msg.partition() or 0, msg.offset() or 0, msg.value())
                if not self._hand(item):
                    return
        except KafkaException as exc:
            self._hand(f"kafka: {exc}")
        finally:
            consumer.close()


class Live:
    """The open streams of a worker, ended when its web server shuts down."""

    def __init__(self) -> None:
        self.readers: set[Reader] = set()

    async def close(self) -> None:
        for reader in list(self.readers):
            reader.stopping.set()
            with contextlib.suppress(asyncio.QueueFull):
                reader.queue.put_nowait("the worker is stopping")  # ends its stream now


LIVE = web.AppKey("live", Live)


def _filters(request: web.Request) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for name in FILTERS:
        values = request.query.getall(name, [])
        if len(values) > 1:
            raise Invalid(f"query parameter {name} is given {len(values)} times", None)
        if values:
            wanted[name] = str(parse_uuid(values[0], name))
    return wanted


def _sse(event: str, data: str, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


async def stream(request: web.Request, settings: Settings) -> web.StreamResponse:
    topic = changes_topic(settings.app_id)
    wanted = _filters(request)
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    start = parse_position(topic, last) if last else None
    raw_since = request.query.get("since")
    since = parse_since(raw_since) if raw_since is not None and start is None else None
    reader = Reader(settings, start, since, asyncio.get_running_loop())
    live = request.app[LIVE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    live.readers.add(reader)
    reader.start()
    positions: Positions = {}
    try:
        while not reader.stopping.is_set():
            try:
                item = await asyncio.wait_for(reader.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if isinstance(item, str):
                await response.write(_sse("error", json.dumps({"error": item})))
                break
            if isinstance(item, dict):
                positions = dict(item)
                ready = json.dumps({"topic": topic, "filters": wanted})
                await response.write(_sse("ready", ready, format_position(topic, positions)))
                continue
            partition, offset, value = item
            positions[partition] = offset + 1
            event = _decode(value)
            if event is None or any(str(event.get(k)) != v for k, v in wanted.items()):
                continue
            await response.write(
                _sse("listing-change", json.dumps(event), format_position(topic, positions))
            )
    except ConnectionResetError:
        pass  # the client went away
    finally:
        reader.stopping.set()
        live.readers.discard(reader)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _decode(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        event = json.loads(value)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def page() -> str:
    return PAGE
