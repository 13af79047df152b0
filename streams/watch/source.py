"""The watch's data source: reads Kafka, Postgres and MongoDB and feeds the model.

One Kafka consumer, with a throwaway group that never commits (it disturbs no group), is assigned
every partition of the five CDC topics and of ``<app>-snapshots`` at the offsets their ends had
when the source started, so every change committed afterwards is read. Rows and listings are
looked up by booking while a change waits for them; counts, the consumer lag (every group named
``<app>`` or ``<app>-…``: committed offsets against the ends of their partitions) and the
dead letters (messages on ``<app>-dead-letters``) are refreshed every ``STATS_EVERY_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from psycopg.rows import dict_row
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from streams import topology
from streams.config import Settings
from streams.ops.errors import OpsError
from streams.ops.kafka import TP, Kafka
from streams.watch import arrivals
from streams.watch.model import Figures, Tracker, parse_change, parse_snapshot

log = logging.getLogger(__name__)

LOOKUP_EVERY_S = 0.1
STATS_EVERY_S = 2.0
TOPICS_EVERY_S = 5.0  # how often topics that did not exist yet are looked for
MAX_LOOKUPS = 20  # listings looked up per round (one find by _id each)


def _now() -> datetime:
    return datetime.now(UTC)


class WatchSource:
    """``poll()`` reads what arrived and returns the figures; ``close()`` when done."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = _now) -> None:
        self.settings, self.clock = settings, clock
        self.cdc_topics = topology.cdc_topics(settings)
        self.snapshot_topic = topology.snapshot_topic(settings.app_id)
        self.dead_letter_topic = topology.dead_letter_topic(settings.app_id)
        # librdkafka logs every failed connection on stderr, which would tear through the view
        # while a broker is down: the view reports the problem instead.
        self.kafka = Kafka(settings.kafka_bootstrap, timeout_s=5.0, client_config={"log_level": 0})
        self.consumer = self.kafka.consumer()
        self._assigned: set[TP] = set()
        self.pg: psycopg.Connection[dict[str, Any]] | None = None
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(
            settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=3000
        )
        self.listings = self.mongo[settings.mongo_database][settings.mongo_collection]
        self.tracker = Tracker(self.clock())
        self.problems: dict[str, str] = {}
        self._next_lookup = self._next_stats = self._next_topics = 0.0
        self._assign(at_end=True)

    # --- Kafka
    def _assign(self, at_end: bool) -> None:
        """Assign partitions not assigned yet: at their current end when the source starts, at
        their beginning for a topic that appeared since (it holds only what came after)."""
        topics = [*self.cdc_topics, self.snapshot_topic]
        counts = self.kafka.partitions(topics)
        new = [(t, p) for t, n in counts.items() for p in range(n) if (t, p) not in self._assigned]
        if not new:
            return
        if at_end:
            ends = self.kafka.watermarks(new)
            tps = [TopicPartition(t, p, ends[(t, p)][1]) for t, p in new]
        else:
            tps = [TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new]
        self.consumer.incremental_assign(tps)
        self._assigned.update(new)
        log.debug("watch assigned partitions=%d", len(tps))

    def _consume(self, wait_s: float) -> None:
        messages = self.consumer.consume(num_messages=1000, timeout=wait_s)
        now = self.clock()
        for msg in messages:
            if msg.error() is not None:
                continue  # a partition's end, or a transient fetch error the client retries
            topic = str(msg.topic())
            if topic == self.snapshot_topic:
                ts = msg.timestamp()[1]
                self.tracker.on_snapshot(parse_snapshot(msg.value(), ts), now)
                continue
            change = parse_change(
                topic, int(msg.partition() or 0), int(msg.offset() or 0), msg.value(), now
            )
            if change is not None:
                self.tracker.on_change(change)

    def _lag(self) -> dict[str, int] | None:
        app = self.settings.app_id
        timeout = self.kafka.timeout_s
        listed = self.kafka.admin.list_consumer_groups(request_timeout=timeout).result(timeout)
        groups = sorted(
            g.group_id
            for g in listed.valid
            if g.group_id == app or g.group_id.startswith(app + "-")
        )
        committed = {g: self.kafka.committed(g) for g in groups}
        tps = {tp for offsets in committed.values() for tp in offsets}
        ends = self.kafka.watermarks(tps)
        lag = {
            g: sum(max(0, ends[tp][1] - offset) for tp, offset in offsets.items())
            for g, offsets in committed.items()
            if offsets
        }
        return lag or None

    def _dead_letters(self) -> int | None:
        counts = self.kafka.partitions([self.dead_letter_topic])
        if not counts:
            return None
        topic = self.dead_letter_topic
        marks = self.kafka.watermarks((topic, p) for p in range(counts[topic]))
        return sum(high - low for low, high in marks.values())

    # --- Postgres and MongoDB
    def _postgres(self) -> psycopg.Connection[dict[str, Any]]:
        if self.pg is None or self.pg.closed:
            self.pg = psycopg.connect(
                self.settings.pg_dsn, autocommit=True, connect_timeout=5, row_factory=dict_row
            )
        return self.pg

    def _look_up_rows(self, now: datetime) -> None:
        rows = sorted(self.tracker.wanted("postgres", now))
        if rows:
            found = self._postgres().execute(arrivals.ROWS, (rows,)).fetchall()
            self.tracker.on_arrivals(
                "postgres",
                [a for r in found if (a := arrivals.arrival("postgres", r["booking_id"], r))],
            )

    def _look_up_listings(self, now: datetime) -> None:
        listings = sorted(self.tracker.wanted("mongodb", now))[:MAX_LOOKUPS]
        got = []
        for booking in listings:
            doc = self.listings.find_one(
                arrivals.listing_filter(booking), arrivals.LISTING_PROJECTION
            )
            if (a := arrivals.arrival("mongodb", booking, doc)) is not None:
                got.append(a)
        self.tracker.on_arrivals("mongodb", got)

    def _counts(self) -> None:
        since = {"since": self.tracker.started_at}
        row = self._postgres().execute(arrivals.WRITTEN_SINCE, since).fetchone()
        if row is not None:
            self.tracker.on_counts(row["rows_written"], row["listings_written"], row["rows"])

    # --- the loop's step
    def _attempt(self, what: str, fn: Callable[[], None]) -> None:
        """Run one part of a step; a part whose service is down is reported, not raised."""
        try:
            fn()
            self.problems.pop(what, None)
        except (psycopg.Error, PyMongoError, KafkaException, OpsError, TimeoutError) as exc:
            text = str(exc) or "no answer in time"
            self.problems[what] = f"{type(exc).__name__}: {text}".splitlines()[0][:160]
            if what == "postgres" and self.pg is not None:
                self.pg.close()
                self.pg = None

    def poll(self, wait_s: float = 0.2) -> Figures:
        """Read what arrived within ``wait_s`` (less when messages come), look up what the
        changes wait for, and return the figures."""
        self._attempt("kafka", lambda: self._consume(wait_s))
        now, tick = self.clock(), time.monotonic()
        if tick >= self._next_lookup:
            self._next_lookup = tick + LOOKUP_EVERY_S
            self._attempt("postgres", lambda: self._look_up_rows(now))
            self._attempt("mongodb", lambda: self._look_up_listings(now))
        if tick >= self._next_stats:
            self._attempt("postgres", self._counts)
            self._attempt("consumer lag", lambda: self.tracker.on_lag(self._lag()))
            self._attempt("dead letters", self._dead_letter_count)
            # Each Kafka request waits for its timeout while the broker is down: ask less often.
            failing = "consumer lag" in self.problems or "dead letters" in self.problems
            self._next_stats = time.monotonic() + STATS_EVERY_S * (5 if failing else 1)
        if tick >= self._next_topics and len(self._assigned) < self._expected():
            self._next_topics = tick + TOPICS_EVERY_S
            self._attempt("kafka", lambda: self._assign(at_end=False))
        return self.tracker.figures(now)

    def _dead_letter_count(self) -> None:
        total = self._dead_letters()
        if total is not None:
            self.tracker.on_dead_letters(total)

    def _expected(self) -> int:
        return (len(self.cdc_topics) + 1) * self.settings.partitions

    def close(self) -> None:
        self.consumer.close()
        self.mongo.close()
        if self.pg is not None:
            self.pg.close()
