"""market_inventory_snapshots: guarded, batched upserts with psycopg 3.

The sink runs in a thread of its own (streams.sinks.follower), on a connection of its own; no
other code shares it, so its transactions never nest in anybody else's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.snapshot import SnapshotRecord
from streams import topology
from streams.errors import SinkRejected, SinkUnavailable
from streams.sinks.base import Item, Refusal
from streams.sinks.records import SNAPSHOT_FIELDS, record_from_row

log = logging.getLogger(__name__)

# The snapshot's own columns are its model's fields (schemas.snapshot.Snapshot): the content is
# every field but the keys and the status, which the guard treats apart.
CONTENT_COLUMNS = tuple(f for f in SNAPSHOT_FIELDS if f not in ("id", "booking_id", "status"))
JSON_COLUMNS = {"sensors", "sensor_summary", "pest_events", "certificates", "metadata"}
GUARD_COLUMNS = ("source_version", "evaluated_at", "content_hash")
ALL_COLUMNS = ("id", "booking_id", *CONTENT_COLUMNS, "status", *GUARD_COLUMNS)

T = topology.SNAPSHOT_TABLE

# The guard: a snapshot replaces the stored one only when it is newer (by source version, then
# by evaluation time) and different. An older or identical snapshot writes nothing, so
# updated_at keeps the time of the last real change. A published snapshot stays published
# while its new content is being re-published.
UPSERT = f"""
INSERT INTO {T} ({", ".join(ALL_COLUMNS)})
VALUES ({", ".join(f"%({c})s" for c in ALL_COLUMNS)})
ON CONFLICT (booking_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in (*CONTENT_COLUMNS, *GUARD_COLUMNS))},
    status = CASE WHEN EXCLUDED.status = 'ready_to_publish' AND {T}.status = 'published'
                  THEN 'published' ELSE EXCLUDED.status END,
    updated_at = now()
WHERE {T}.content_hash <> EXCLUDED.content_hash
  AND ({T}.source_version, {T}.evaluated_at) < (EXCLUDED.source_version, EXCLUDED.evaluated_at)
RETURNING booking_id
"""


def row_params(record: SnapshotRecord) -> dict[str, Any]:
    snap = record.snapshot.model_dump(mode="python")
    params: dict[str, Any] = {c: snap[c] for c in ("id", "booking_id", *CONTENT_COLUMNS, "status")}
    for c in JSON_COLUMNS:
        params[c] = Jsonb(record.snapshot.model_dump(mode="json")[c])
    params.update(
        source_version=record.source_version,
        evaluated_at=record.evaluated_at,
        content_hash=record.content_hash,
    )
    return params


DELETE = f"DELETE FROM {T} WHERE booking_id = ANY(%s)"

H = "market_inventory_snapshot_history"
HISTORY_COLUMNS = ("booking_id", *GUARD_COLUMNS, "id", *CONTENT_COLUMNS, "status")
# The history row of each booking the upsert changed, copied from the row as stored (its status
# included); a version already recorded adds nothing. RETURNING gives the status as stored (a
# published snapshot stays published) to the change events.
RECORD_HISTORY = f"""
INSERT INTO {H} ({", ".join(HISTORY_COLUMNS)})
SELECT {", ".join(HISTORY_COLUMNS)} FROM {T} WHERE booking_id = ANY(%s)
ON CONFLICT DO NOTHING
RETURNING booking_id, status
"""
# The stored rows of a batch before its upsert, for the change events (under the row locks).
READ_BEFORE = f"SELECT {', '.join(HISTORY_COLUMNS)} FROM {T} WHERE booking_id = ANY(%s)"

#: (the stored snapshot before the write or None, the one written), for each booking a batch
#: changed.
Changes = Sequence[tuple[SnapshotRecord | None, SnapshotRecord]]


class ChangeLog(Protocol):
    """What the sink tells of the snapshots it changed (streams.changes.ChangeOutbox)."""

    def record(self, conn: psycopg.Connection[Any], changes: Changes) -> None:
        """Called in the sink's transaction, under the booking locks, after the upserts."""

    def committed(self) -> None:
        """Called once that transaction has committed."""


# Transaction-scoped advisory locks per booking, always taken in booking order:
# - "row": held by a writer of the snapshot row, and by a writer of market_listing_sync from
#   that write to its commit. Each side's trigger reads the other's table; under READ COMMITTED
#   two such transactions at once would each miss the other's uncommitted write, leaving a row
#   unpublished whose listing exists.
# - "listing": held by a writer of listings across its MongoDB write (streams.sinks.listings),
#   which may be slow; the row writers never wait for it.
LOCK_SEEDS = {"row": 1129, "listing": 1130}
# Advisory locks live in Postgres's shared lock table (max_locks_per_transaction x
# max_connections entries): a transaction locks at most this many bookings.
LOCKS_PER_TRANSACTION = 500
LOCK_BOOKINGS = (
    "SELECT pg_advisory_xact_lock(hashtextextended(b::text, %s)) "
    "FROM unnest(%s::uuid[]) AS b ORDER BY b"
)


def lock_bookings(
    conn: psycopg.Connection[Any], booking_ids: Sequence[UUID], what: str = "row"
) -> None:
    conn.execute(LOCK_BOOKINGS, (LOCK_SEEDS[what], sorted(set(booking_ids))))


R = TypeVar("R")


def run_guarded(conn: psycopg.Connection[Any], fn: Callable[[psycopg.Connection[Any]], R]) -> R:
    """Run ``fn`` in a transaction of ``conn``, mapping psycopg's errors to the pipeline's.

    Anything that is not about the data (a lost connection, a missing table, a privilege, an
    error in the driver's own state) closes the connection: the next attempt starts clean instead
    of inside a transaction that will never commit.
    """
    try:
        with conn.transaction():
            return fn(conn)
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise SinkRejected(f"postgres rejected the snapshot: {exc}") from exc
    except psycopg.Error as exc:
        conn.close()
        raise SinkUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc


class SinkConnection:
    """A sink's own Postgres connection, opened on first use and again after a failure."""

    def __init__(self, dsn: str, name: str) -> None:
        self._dsn, self._name = dsn, name
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._dsn,
                    autocommit=False,
                    connect_timeout=10,
                    application_name=f"mis-sink-{self._name}",
                )
            except psycopg.Error as exc:
                raise SinkUnavailable(f"postgres: {exc}") from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresSink:
    """The snapshot table as a SnapshotSink: guarded upserts, and deletes for tombstones."""

    name = "postgres"

    def __init__(self, dsn: str, changes: ChangeLog | None = None) -> None:
        self._conn = SinkConnection(dsn, self.name)
        self._changes = changes

    def close(self) -> None:
        self._conn.close()

    def write(self, items: Sequence[Item]) -> list[Refusal]:
        """Write a batch, a transaction per LOCKS_PER_TRANSACTION bookings; on a refusal, find
        the items refused one by one."""
        refused: list[Refusal] = []
        for start in range(0, len(items), LOCKS_PER_TRANSACTION):
            refused += self._write_chunk(items[start : start + LOCKS_PER_TRANSACTION])
        return refused

    def _write_chunk(self, items: Sequence[Item]) -> list[Refusal]:
        try:
            self._write(items)
            return []
        except SinkRejected as exc:
            if len(items) == 1:
                return [(items[0], str(exc))]
        refused: list[Refusal] = []
        for item in items:
            try:
                self._write([item])
            except SinkRejected as exc:
                refused.append((item, str(exc)))
        return refused

    def _write(self, items: Sequence[Item]) -> set[UUID]:
        records = [i.record for i in items if i.record is not None]
        gone = [i.booking_id for i in items if i.record is None]

        def work(conn: psycopg.Connection[Any]) -> set[UUID]:
            changed: set[UUID] = set()
            before: dict[UUID, dict[str, Any]] = {}
            lock_bookings(conn, [i.booking_id for i in items])
            if records and self._changes is not None:
                with conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(READ_BEFORE, ([r.snapshot.booking_id for r in records],))
                    before.update((row["booking_id"], row) for row in cur.fetchall())
            if records:
                with conn.cursor() as cur:
                    cur.executemany(UPSERT, [row_params(r) for r in records], returning=True)
                    while True:
                        row = cur.fetchone()
                        if row is not None:
                            changed.add(row[0])
                        if not cur.nextset():
                            break
            if changed:
                rows = conn.execute(RECORD_HISTORY, (sorted(changed),)).fetchall()
                if self._changes is not None:
                    self._changes.record(conn, _changes(records, before, dict(rows)))
            if gone:
                conn.execute(DELETE, (gone,))
            return changed

        changed = run_guarded(self._conn.get(), work)
        if changed and self._changes is not None:
            self._changes.committed()
        return changed


def _changes(
    records: Sequence[SnapshotRecord],
    before: dict[UUID, dict[str, Any]],
    stored: dict[UUID, str],
) -> Changes:
    """(before, after) of each booking whose history gained a row, with the status as stored."""
    changes = []
    for r in records:
        status = stored.get(r.snapshot.booking_id)
        if status is None:
            continue
        old = before.get(r.snapshot.booking_id)
        new = r.model_copy(update={"snapshot": r.snapshot.model_copy(update={"status": status})})
        changes.append((record_from_row(old) if old is not None else None, new))
    return changes


async def expired_terminal(dsn: str, older_than: datetime) -> list[UUID]:
    """Bookings whose completed or withdrawn snapshot finished before ``older_than``.

    On a connection of its own, opened for the query: the daily cleanup shares nothing with the
    sinks.
    """
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cur = await conn.execute(
                f"SELECT booking_id FROM {T} "
                "WHERE status IN ('completed', 'withdrawn') AND finished_at < %s",
                (older_than,),
            )
            return [r[0] for r in await cur.fetchall()]
    except psycopg.Error as exc:
        raise SinkUnavailable(f"postgres: {exc}") from exc


# Versions evaluated before the cutoff, but not the one a booking's snapshot row holds now: a
# booking unchanged for longer than the retention keeps its history's newest entry. In chunks,
# so that no transaction holds the locks of years of history at once.
PRUNE_HISTORY = f"""
DELETE FROM {H} WHERE ctid = ANY(ARRAY(
    SELECT h.ctid FROM {H} h
    WHERE h.evaluated_at < %(cutoff)s
      AND NOT EXISTS (
          SELECT 1 FROM {T} s
          WHERE s.booking_id = h.booking_id
            AND s.source_version = h.source_version
            AND s.evaluated_at = h.evaluated_at)
    LIMIT %(chunk)s))
"""
PRUNE_CHUNK = 10_000


async def prune_history(dsn: str, older_than: datetime) -> int:
    """Delete the history versions evaluated before ``older_than``; how many were deleted."""
    deleted = 0
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                cur = await conn.execute(
                    PRUNE_HISTORY, {"cutoff": older_than, "chunk": PRUNE_CHUNK}
                )
                deleted += cur.rowcount
                if cur.rowcount < PRUNE_CHUNK:
                    return deleted
    except psycopg.Error as exc:
        raise SinkUnavailable(f"postgres: {exc}") from exc
