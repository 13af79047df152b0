"""The listing-change outbox: events written with the snapshots, sent to Kafka after.

The Postgres sink inserts a batch's listing changes into ``market_listing_change_outbox`` in the
transaction of its upserts (streams.changes.ChangeOutbox), so the events exist exactly when the
snapshot change they describe does. ``OutboxPublisher`` sends them: in a thread beside the
sinks, woken by the sink's commits and every ``SWEEP_S`` besides (for what another process left
behind), it reads its topic's events in seq order, produces them, waits until Kafka has
acknowledged every one, and only then deletes them, in the transaction that read them. A crash
or a Kafka outage anywhere before that delete leaves them to the next round or the next
publisher: delivery is at least once (consumers deduplicate by event_id), and no event is lost
between the Postgres commit and Kafka.

One publisher per topic at a time (a transaction-scoped advisory lock, held across the send):
with two, a booking's later event could overtake an earlier one still in the other's hands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from confluent_kafka import KafkaException, Producer

from streams import metrics
from streams.config import Settings
from streams.errors import SinkUnavailable
from streams.sinks.postgres import SinkConnection, run_guarded

log = logging.getLogger(__name__)

OUTBOX = "market_listing_change_outbox"
INSERT = f"INSERT INTO {OUTBOX} (topic, booking_id, event_id, payload) VALUES (%s, %s, %s, %s)"
LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 1131))"
PENDING = f"SELECT seq, booking_id, payload FROM {OUTBOX} WHERE topic = %s ORDER BY seq LIMIT %s"
DONE = f"DELETE FROM {OUTBOX} WHERE seq = ANY(%s)"

#: Events sent per round (one transaction, one flush).
BATCH = 2000
#: How often a publisher looks for events no commit of its own process announced.
SWEEP_S = 2.0
FLUSH_TIMEOUT_S = 30.0


def write(
    conn: psycopg.Connection[Any], topic: str, events: Sequence[tuple[UUID, str, str]]
) -> None:
    """Add (booking_id, event_id, payload) events for ``topic`` in the caller's transaction."""
    if events:
        with conn.cursor() as cur:
            cur.executemany(INSERT, [(topic, b, e, p) for b, e, p in events])


class OutboxPublisher:
    """Sends one topic's outbox to Kafka until ``stop`` is set."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self._conn = SinkConnection(settings.pg_dsn, "outbox")
        self._wake = threading.Event()
        self._producer: Producer | None = None

    def wake(self) -> None:
        self._wake.set()

    def _connect(self) -> Producer:
        # Idempotent: the broker keeps the producer's order per partition across retries.
        self._producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        return self._producer

    def run(self, stop: threading.Event) -> None:
        log.info("listing-change outbox publisher topic=%s", self.topic)
        # Connected up front (the first event would otherwise wait for the producer's id and
        # the topic's metadata), which also sends what a dead worker left behind at once.
        try:
            self._connect().list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            log.warning("outbox publisher: kafka not reachable yet error=%s", exc)
        delay = 0.2
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    sent = self.publish_pending()
                except SinkUnavailable as exc:
                    log.warning("outbox publish failed retry_in=%.1fs error=%s", delay, exc)
                    stop.wait(delay)
                    delay = min(delay * 2, self.settings.sink_retry_max_s)
                    continue
                delay = 0.2
                if sent < BATCH:
                    self._wake.wait(SWEEP_S)
        finally:
            self._conn.close()
            if self._producer is not None:
                self._producer.flush(10)

    def publish_pending(self) -> int:
        """Send what the outbox holds for the topic, up to BATCH events; how many were sent."""
        return run_guarded(self._conn.get(), self._publish)

    def _publish(self, conn: psycopg.Connection[Any]) -> int:
        conn.execute(LOCK, (self.topic,))
        rows = conn.execute(PENDING, (self.topic, BATCH)).fetchall()
        if not rows:
            return 0
        producer = self._producer or self._connect()
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        try:
            for _seq, booking_id, payload in rows:
                producer.produce(
                    self.topic,
                    key=str(booking_id).encode(),
                    value=payload.encode(),
                    on_delivery=delivered,
                )
            left = producer.flush(FLUSH_TIMEOUT_S)
        except (KafkaException, BufferError) as exc:
            raise SinkUnavailable(f"listing changes: {exc}") from exc
        if left or failed:
            # Nothing is deleted: the round is sent again, duplicates included.
            raise SinkUnavailable(
                f"listing changes: {left} undelivered, errors: {'; '.join(failed[:3])}"
            )
        conn.execute(DONE, ([seq for seq, _, _ in rows],))
        metrics.EVENTS_OUT.labels(topic=self.topic).inc(len(rows))
        log.debug("listing changes published topic=%s count=%d", self.topic, len(rows))
        return len(rows)
