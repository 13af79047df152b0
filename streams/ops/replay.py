"""``mis replay``: move the pipeline's consumer group back and let the workers replay.

The group (MIS_APP_ID) is moved on the CDC topics: to their earliest offsets, to the first
offset at or after a time, or to explicit ``topic:partition:offset`` positions (any topic of
the pipeline). The key spaces ignore changes they already hold (every row change carries its
Debezium version), so a replay on top of the current join state changes nothing unless
something was missed; with ``--rebuild-tables`` the state is rebuilt from nothing (see
streams.ops.rebuild) and every booking's snapshot is emitted again, which the sinks write only
where its content differs from what they hold.

Kafka refuses to move the offsets of a group with active members, and a worker that kept
running would not see the move anyway: the replay refuses while workers run. Once the offsets
are moved it waits for the workers to be started and to catch up, and reports how long the
replay took.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import psycopg
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from streams import topology
from streams.config import Settings
from streams.ops import follow as following
from streams.ops.errors import OpsError, WorkersRunning
from streams.ops.kafka import TP, Kafka
from streams.ops.rebuild import Rekeyed, clear_tables, held_version, rekey, send_floor
from streams.ops.terminal import Progress, duration, rate, summary

log = logging.getLogger(__name__)

Mode = Literal["earliest", "datetime", "offsets"]


@dataclass(frozen=True)
class ReplayRequest:
    mode: Mode
    at: datetime | None = None
    positions: Mapping[TP, int] = field(default_factory=dict)
    rebuild: bool = False
    wait: bool = True
    dry_run: bool = False
    timeout_s: float = 3600.0

    def describe(self) -> str:
        what = {
            "earliest": "from the earliest offsets",
            "datetime": f"from {self.at.isoformat() if self.at else '?'}",
            "offsets": f"from {len(self.positions)} explicit positions",
        }[self.mode]
        return what + (", join tables rebuilt from nothing" if self.rebuild else "")


def parse_position(text: str) -> tuple[TP, int]:
    """``topic:partition:offset`` (Kafka topic names cannot contain a colon)."""
    try:
        topic, partition, offset = text.rsplit(":", 2)
        tp, value = (topic, int(partition)), int(offset)
    except ValueError as exc:
        raise OpsError(f"{text!r} is not topic:partition:offset") from exc
    if not topic or tp[1] < 0 or value < 0:
        raise OpsError(f"{text!r} is not topic:partition:offset")
    return tp, value


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC, like every time of the pipeline."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise OpsError(f"{text!r} is not an ISO 8601 time (2026-05-01T12:00:00Z)") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def check(request: ReplayRequest) -> None:
    if request.rebuild and request.mode != "earliest":
        raise OpsError(
            "--rebuild-tables rebuilds the join state from nothing, which needs the whole CDC "
            "history: use it with --to-earliest"
        )
    if request.mode == "datetime" and request.at is None:
        raise OpsError("--to-datetime needs a time")
    if request.mode == "offsets" and not request.positions:
        raise OpsError("--to-offset needs at least one topic:partition:offset")


def targets(
    request: ReplayRequest,
    cdc: Sequence[TP],
    marks: Mapping[TP, tuple[int, int]],
    time_offsets: Mapping[TP, int],
) -> dict[TP, int]:
    """The offsets the group is moved to (rebuild aside: see run)."""
    if request.mode == "earliest":
        return {tp: marks[tp][0] for tp in cdc}
    if request.mode == "datetime":
        return {tp: time_offsets[tp] for tp in cdc}
    moves: dict[TP, int] = {}
    for tp, offset in request.positions.items():
        if tp not in marks:
            raise OpsError(f"{tp[0]}[{tp[1]}] is not a partition of the pipeline's topics")
        low, high = marks[tp]
        if not low <= offset <= high:
            raise OpsError(f"{tp[0]}[{tp[1]}] holds offsets {low}..{high}, not {offset}")
        moves[tp] = offset
    return moves


def refuse_if_running(kafka: Kafka, settings: Settings) -> None:
    members = kafka.members(settings.app_id) or kafka.members(
        topology.gather_group(settings.app_id)
    )
    if members:
        names = "; ".join(map(str, members))
        raise WorkersRunning(
            f"consumer group {settings.app_id!r} has {len(members)} active member(s): {names}. "
            f"Stop every worker of MIS_APP_ID={settings.app_id} first (Ctrl-C or SIGTERM; a "
            f"killed worker leaves the group after MIS_SESSION_TIMEOUT_S="
            f"{settings.session_timeout_s:.0f}s), then run the replay again"
        )


def sink_writes(settings: Settings, since: datetime) -> tuple[int | None, int | None]:
    """Postgres rows and MongoDB listings written since ``since`` (None: not reachable)."""
    rows: int | None = None
    listings: int | None = None
    try:
        with psycopg.connect(settings.pg_dsn, connect_timeout=5) as conn:
            found = conn.execute(
                "SELECT count(*) FROM market_inventory_snapshots "
                "WHERE updated_at >= %s OR last_synced_at >= %s",
                (since, since),
            ).fetchone()
            rows = int(found[0]) if found else 0
    except psycopg.Error as exc:
        log.warning("postgres not reachable for the summary error=%s", exc)
    client: MongoClient[dict[str, object]] = MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    try:
        collection = client[settings.mongo_database][settings.mongo_collection]
        listings = collection.count_documents({"published_at": {"$gte": since}})
    except PyMongoError as exc:
        log.warning("mongodb not reachable for the summary error=%s", exc)
    finally:
        client.close()
    return rows, listings


@dataclass
class Outcome:
    request: ReplayRequest
    group: str
    moves: dict[TP, int]
    events: int
    started_at: datetime
    committed: dict[TP, int] = field(default_factory=dict)
    cleared: int | None = None
    rekeyed: Rekeyed | None = None
    followed: following.Followed | None = None
    produced: following.Produced | None = None
    sinks: tuple[int | None, int | None] = (None, None)

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("consumer group", self.group),
            ("replay", self.request.describe()),
            ("partitions moved", str(len(self.moves))),
            ("change events", f"{self.events:,}"),
        ]
        if self.cleared is not None:
            rows.append(("table keys cleared", f"{self.cleared:,}"))
        if self.rekeyed is not None:
            r = self.rekeyed
            rows.append(
                (
                    "history re-keyed",
                    f"{r.messages:,} messages in {duration(r.seconds)} "
                    f"({rate(r.events, r.seconds, 'events')}), {r.unroutable} unroutable",
                )
            )
        f = self.followed
        if f is None:
            rows.append(("workers", "not waited for (--no-wait)"))
            return rows
        if f.joined_at is not None:
            rows.append(("workers joined", f"{f.joined_at:%H:%M:%S} ({len(f.members)} member(s))"))
        if not f.caught_up:
            rows.append(("caught up", "NO: timed out; see the workers' logs and run again"))
            return rows
        seconds = f.seconds or 0.0
        rows.append(
            (
                "duration",
                f"{duration(seconds)} from the workers joining to every offset "
                "committed (commits come every 2.8 s)",
            )
        )
        rows.append(("rate", rate(self.events, seconds, "change events")))
        p = self.produced
        if p is not None and p.seconds is not None:
            rows.append(
                (
                    "processing",
                    f"{duration(p.seconds)} from the first to the last message "
                    f"the workers produced: {rate(self.events, p.seconds, 'change events')}",
                )
            )
        if p is not None:
            rows.append(("snapshots emitted", f"{p.snapshots:,}"))
            rows.append(("internal messages", f"{p.messages:,}"))
        pg_rows, listings = self.sinks
        rows.append(("postgres rows written", "n/a" if pg_rows is None else f"{pg_rows:,}"))
        rows.append(("mongodb listings written", "n/a" if listings is None else f"{listings:,}"))
        return rows


def run(settings: Settings, request: ReplayRequest) -> Outcome:
    """Plan, move the offsets (rebuilding the tables if asked) and follow the workers."""
    check(request)
    group = topology.worker_group(settings.app_id)
    kafka = Kafka(settings.kafka_bootstrap)
    refuse_if_running(kafka, settings)

    cdc_topics = topology.cdc_topics(settings)
    space_topics = topology.key_space_topics(settings.app_id)
    booking_topic = topology.key_space_topic(settings.app_id, "booking")
    snapshot_topic = topology.snapshot_topic(settings.app_id)
    internal_topics = [*space_topics, snapshot_topic]
    counts = kafka.partitions([*cdc_topics, *internal_topics])
    missing = [t for t in internal_topics if t not in counts]
    if missing:
        raise OpsError(
            f"topics {', '.join(missing)} do not exist: has a worker of MIS_APP_ID={group} "
            "ever run? (`mis worker` creates them)"
        )
    cdc = [(t, p) for t in cdc_topics if t in counts for p in range(counts[t])]
    internal = [(t, p) for t in internal_topics for p in range(counts[t])]
    marks = kafka.watermarks([*cdc, *internal])
    time_offsets: dict[TP, int] = {}
    if request.mode == "datetime" and request.at is not None:
        time_offsets = kafka.offsets_for_time(cdc, int(request.at.timestamp() * 1000))
    key_spaces = [tp for tp in internal if tp[0] in space_topics]
    if request.rebuild:
        # The agents resume their CDC topics after the history re-keyed below (they read the
        # re-keyed changes on their key-space topics instead); the key spaces start at
        # the first re-keyed message, past everything answered from the old state.
        moves = {tp: marks[tp][1] for tp in (*cdc, *key_spaces)}
        events = sum(high - low for low, high in (marks[tp] for tp in cdc))
    else:
        moves = targets(request, cdc, marks, time_offsets)
        events = sum(marks[tp][1] - offset for tp, offset in moves.items())
    before = {**kafka.committed(group), **kafka.committed(topology.gather_group(settings.app_id))}
    outcome = Outcome(request, group, moves, events, datetime.now(UTC), before)
    log.info(
        "replay planned group=%s mode=%s events=%d partitions=%d rebuild=%s",
        group,
        request.mode,
        events,
        len(moves),
        request.rebuild,
    )
    if request.dry_run:
        return outcome

    progress = Progress("replay", events or None)
    sources = {tp: (offset, marks[tp][1]) for tp, offset in moves.items()}
    if request.rebuild:
        changelogs = kafka.partitions(
            topology.changelog_topic(settings.app_id, t) for t in topology.TABLES
        )
        outcome.cleared = clear_tables(kafka, changelogs, Progress("clear tables"))
        # Rebuilt bookings must not come out older than what the sinks hold (see VersionFloor).
        send_floor(
            kafka,
            settings.app_id,
            held_version(settings.pg_dsn),
            counts[booking_topic],
        )
        outcome.rekeyed = rekey(
            kafka,
            settings.app_id,
            {tp: marks[tp] for tp in cdc},
            counts,
            Progress("re-key history"),
        )
        after = kafka.watermarks(key_spaces)
        sources = {tp: (marks[tp][1], high) for tp, (_, high) in after.items()}
        progress.total = outcome.rekeyed.messages or None
    refuse_if_running(kafka, settings)  # a worker may have started meanwhile
    # The topics the gatherers read move in their group (streams.runtime.gatherer), the others
    # in the workers'.
    gathered = {settings.cdc_topic(t) for t in topology.gathered_tables(settings)}
    kafka.alter_offsets(group, {tp: o for tp, o in moves.items() if tp[0] not in gathered})
    kafka.alter_offsets(
        topology.gather_group(settings.app_id),
        {tp: o for tp, o in moves.items() if tp[0] in gathered},
    )
    progress.say(
        f"offsets of group {group} moved ({len(moves)} partitions): start the workers "
        "now (`mis worker`)"
    )
    if not request.wait:
        return outcome

    start = {tp: high for tp, (_, high) in kafka.watermarks(internal).items()}
    quiet = {t for t in internal_topics if t != booking_topic}
    outcome.followed = following.follow(
        kafka,
        group,
        sources,
        {tp: marks[tp][0] for tp in internal},
        quiet,
        progress,
        request.timeout_s,
    )
    if outcome.followed.caught_up:
        outcome.produced = following.produced(kafka, start, snapshot_topic)
        # Each sink commits a batch's offsets only once the batch is written.
        outcome.sinks = sink_writes(settings, outcome.started_at)
    return outcome


def plan_rows(outcome: Outcome) -> list[tuple[str, str]]:
    rows = [("consumer group", outcome.group), ("replay", outcome.request.describe())]
    for tp, offset in sorted(outcome.moves.items()):
        before = outcome.committed.get(tp)
        rows.append((f"{tp[0]}[{tp[1]}]", f"{'-' if before is None else before} -> {offset}"))
    rows.append(("change events", f"{outcome.events:,}"))
    return rows


def main(settings: Settings, request: ReplayRequest) -> int:
    outcome = run(settings, request)
    if request.dry_run:
        summary("replay plan (dry run: nothing moved)", plan_rows(outcome))
        return 0
    summary("replay summary", outcome.rows())
    return 0 if outcome.followed is None or outcome.followed.caught_up else 1
