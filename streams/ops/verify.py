"""``mis verify``: every snapshot row and listing against a recomputation from the source tables.

The recomputation does not use the pipeline's builder (streams/builder.py, streams/state.py):
SQL selects what docs/snapshot-contract.md says each part is made of, straight from the five
source tables, and only the rules that depend on the time are applied here, so that one query
answers for several instants.

- ``sensors``: ``DISTINCT ON (location_id, sensor_type)`` by ``reading_time DESC, id DESC``;
- ``sensor_summary``: the same over ``(location_id, sensor_id, sensor_type)``, then per type
  ``round(avg/min/max, 2)`` in ``numeric`` (half away from zero) on the reading's text
  (``value::text``, the shortest text that reads back as the same double);
- ``sensor_health``: over each sensor_id's newest reading of any type (``DISTINCT ON
  (location_id, sensor_id)``): fresh when ``active`` and under an hour old;
- ``pest_events``: ``detected_at >= now - 7 days``, newest first (ties by id, descending);
- ``certificates``: every one of the vendor, by ``(type COLLATE "C", id)``, ``expired`` once
  ``expiry_date`` is before today (UTC); ``certification_types`` from the valid ones;
- status from the booking's status; a snapshot row whose booking row no longer exists is
  ``withdrawn`` (deleted or truncated), and its booking details cannot be checked: its own
  location, vendor and (when set) inspection are used for the rest.

What counts as what, per booking (restricted to ``--farmer``/``--booking`` when given):

- *lost*: a booking row without a snapshot row; a row that should have a listing
  (``MIS_AUTO_PUBLISH``, or the row has a ``market_listing_id``) without one. A finished
  booking whose ``updated_at`` is older than the retention may have been cleaned up: not lost.
- *regressed*: a row or listing whose fields differ from the recomputation (each field named).
- *extra*: a listing without a row; a finished row older than the retention plus a day (the
  cleanup runs daily).

Time. A row is evaluated at some instant and time-driven fields (the pest window, sensor
freshness, certificate expiry) change with no write; the pipeline catches up within a tick.
A row or listing is correct when it equals the recomputation at ``now``, at ``now - grace``
(a deadline passed less than ``grace`` ago and the pipeline has not ticked yet), or at its own
``evaluated_at`` when that lies inside ``[now - grace, now]`` (it was written meanwhile).
``grace`` defaults to three tick intervals plus ten seconds. Tests pin ``now``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from pymongo import MongoClient

from schemas.snapshot import BOOKING_FIELDS, QUALITY_FIELDS, Snapshot, snapshot_id
from streams import topology
from streams.config import Settings
from streams.ops.errors import OpsError

Sink = Literal["row", "listing"]
Kind = Literal["lost", "regressed", "extra"]

PEST_WINDOW = timedelta(days=7)
STALE_AFTER = timedelta(hours=1)
ALERTS = ("medium", "high", "critical")
LIVE = ("pending", "confirmed", "active")
TABLE = topology.SNAPSHOT_TABLE


# --------------------------------------------------------------------------- reading the sinks


def read_rows(conn: psycopg.Connection[Any], scope: Scope) -> dict[UUID, dict[str, Any]]:
    """Every market_inventory_snapshots row in scope, by booking_id, as psycopg returns it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM {TABLE}")
        return {r["booking_id"]: r for r in cur if scope.admits(r["farmer_id"], r["booking_id"])}


def read_listings(
    client: MongoClient[dict[str, Any]], settings: Settings, scope: Scope
) -> tuple[dict[UUID, dict[str, Any]], list[str]]:
    """Every listing in scope by booking_id, and the ids of documents naming no booking."""
    found: dict[UUID, dict[str, Any]] = {}
    unreadable: list[str] = []
    for doc in client[settings.mongo_database][settings.mongo_collection].find({}):
        try:
            booking, farmer = UUID(str(doc["booking_id"])), UUID(str(doc["farmer_id"]))
        except (KeyError, ValueError):
            unreadable.append(str(doc.get("_id")))
            continue
        if scope.admits(farmer, booking):
            found[booking] = doc
    return found, unreadable


# --------------------------------------------------------------------------- the recomputation

Q_BOOKINGS = """
SELECT b.*, i.id AS i_id, i.status AS i_status, i.quality_score AS i_quality_score,
       i.freshness AS i_freshness, i.visual_defects AS i_visual_defects,
       i.shelf_life_days AS i_shelf_life_days
FROM storage_bookings b LEFT JOIN crop_inspections i ON i.id = b.ai_inspection_id
"""
Q_INSPECTIONS = """
SELECT id AS i_id, status AS i_status, quality_score AS i_quality_score, freshness AS i_freshness,
       visual_defects AS i_visual_defects, shelf_life_days AS i_shelf_life_days
FROM crop_inspections WHERE id = ANY(%s)
"""
Q_SENSORS = """
SELECT DISTINCT ON (location_id, sensor_type)
       location_id, sensor_type, value, unit, reading_time, status
FROM sensor_readings WHERE location_id = ANY(%s)
ORDER BY location_id, sensor_type, reading_time DESC, id DESC
"""
# The scale of the sum is raised to 40 digits before dividing, so the average is rounded to
# the cent from 40 exact digits rather than from numeric's default 16 significant ones.
Q_SUMMARY = """
WITH latest AS (
    SELECT DISTINCT ON (location_id, sensor_id, sensor_type)
           location_id, sensor_type, value::text::numeric AS v
    FROM sensor_readings WHERE location_id = ANY(%s)
    ORDER BY location_id, sensor_id, sensor_type, reading_time DESC, id DESC
)
SELECT location_id, sensor_type,
       round(sum(v) * 1.0000000000000000000000000000000000000000 / count(*), 2) AS avg,
       round(min(v), 2) AS min, round(max(v), 2) AS max
FROM latest GROUP BY location_id, sensor_type
"""
Q_HEALTH = """
SELECT DISTINCT ON (location_id, sensor_id) location_id, reading_time, status
FROM sensor_readings WHERE location_id = ANY(%s)
ORDER BY location_id, sensor_id, reading_time DESC, id DESC
"""
Q_PESTS = """
SELECT location_id, id, pest_type, severity, confidence, detected_at
FROM pest_detections WHERE location_id = ANY(%s) AND detected_at >= %s
ORDER BY location_id, detected_at DESC, id DESC
"""
Q_CERTIFICATES = """
SELECT vendor_id, id, type, issuer, status, expiry_date, document_url, score
FROM certificates WHERE vendor_id = ANY(%s)
ORDER BY vendor_id, type COLLATE "C", id
"""


@dataclass
class Sources:
    """What the source tables hold for the bookings in scope, the time left out."""

    bookings: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    inspections: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    sensors: dict[UUID, dict[str, dict[str, Any]]] = field(default_factory=dict)
    summary: dict[UUID, dict[str, float]] = field(default_factory=dict)
    health: dict[UUID, list[tuple[datetime, str]]] = field(default_factory=dict)
    pests: dict[UUID, list[dict[str, Any]]] = field(default_factory=dict)
    certificates: dict[UUID, list[dict[str, Any]]] = field(default_factory=dict)


def _num(value: Decimal) -> float:
    return 0.0 if value == 0 else float(value)


def read_sources(
    conn: psycopg.Connection[Any],
    scope: Scope,
    rows: Mapping[UUID, Mapping[str, Any]],
    since: datetime,
) -> Sources:
    """Read the source tables for the bookings in scope and for the rows of deleted bookings."""
    src = Sources()
    conn.execute("SET extra_float_digits = 1")  # value::text: the shortest exact text
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(Q_BOOKINGS)
        src.bookings = {b["id"]: b for b in cur.fetchall() if scope.admits(b["farmer_id"], b["id"])}
        orphans = [r for k, r in rows.items() if k not in src.bookings]
        cur.execute(Q_INSPECTIONS, ([r["inspection_id"] for r in orphans if r["inspection_id"]],))
        src.inspections = {i["i_id"]: i for i in cur.fetchall()}
        locations = list(
            {b["location_id"] for b in src.bookings.values()} | {r["location_id"] for r in orphans}
        )
        vendors = list(
            {b["vendor_id"] for b in src.bookings.values()} | {r["vendor_id"] for r in orphans}
        )
        cur.execute(Q_SENSORS, (locations,))
        for s in cur.fetchall():
            src.sensors.setdefault(s["location_id"], {})[s["sensor_type"]] = {
                "value": s["value"],
                "unit": s["unit"],
                "reading_time": _ts(s["reading_time"]),
                "status": s["status"],
            }
        cur.execute(Q_SUMMARY, (locations,))
        for s in cur.fetchall():
            summary = src.summary.setdefault(s["location_id"], {})
            for stat in ("avg", "min", "max"):
                summary[f"{s['sensor_type']}_{stat}"] = _num(s[stat])
        cur.execute(Q_HEALTH, (locations,))
        for s in cur.fetchall():
            src.health.setdefault(s["location_id"], []).append((s["reading_time"], s["status"]))
        cur.execute(Q_PESTS, (locations, since - PEST_WINDOW))
        for p in cur.fetchall():
            src.pests.setdefault(p.pop("location_id"), []).append(p)
        cur.execute(Q_CERTIFICATES, (vendors,))
        for c in cur.fetchall():
            src.certificates.setdefault(c.pop("vendor_id"), []).append(c)
    return src


def _health(latest: list[tuple[datetime, str]], now: datetime) -> str:
    fresh = [status == "active" and now - at < STALE_AFTER for at, status in latest]
    if not fresh:
        return "unknown"
    return "ok" if all(fresh) else "degraded" if any(fresh) else "offline"


def expected(
    src: Sources, booking_id: UUID, row: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The snapshot of ``booking_id`` at ``now``, in the canonical form of ``canonical_row``.

    ``row`` stands in for a booking row that no longer exists (deleted or truncated).
    """
    b = src.bookings.get(booking_id)
    if b is None:
        assert row is not None
        base: Mapping[str, Any] = row
        iid = row["inspection_id"]
        status = "withdrawn"
        inspection = src.inspections.get(UUID(str(iid))) if iid is not None else None
    else:
        base = b
        status = {"completed": "completed", "cancelled": "withdrawn"}.get(b["status"], "live")
        inspection = b if b["i_id"] is not None else None
    location, vendor = UUID(str(base["location_id"])), UUID(str(base["vendor_id"]))
    pests = [p for p in src.pests.get(location, []) if p["detected_at"] >= now - PEST_WINDOW]
    alerts = any(p["severity"] in ALERTS for p in pests)
    today = now.astimezone(UTC).date()
    certs = [
        {
            **c,
            "status": "expired"
            if c["expiry_date"] is not None and c["expiry_date"] < today
            else c["status"],
        }
        for c in src.certificates.get(vendor, [])
    ]
    valid = sorted({c["type"] for c in certs if c["status"] == "valid"})
    q = inspection or {}
    snap: dict[str, Any] = {
        "id": str(snapshot_id(booking_id)),
        "booking_id": str(booking_id),
        **{k: _plain(base[k]) for k in BOOKING_FIELDS},
        "inspection_id": _plain(q.get("i_id")),
        "inspection_status": q.get("i_status"),
        "quality_score": _plain(q.get("i_quality_score")),
        "freshness": q.get("i_freshness"),
        "visual_defects": q.get("i_visual_defects"),
        "shelf_life_days": q.get("i_shelf_life_days"),
        "sensors": src.sensors.get(location, {}),
        "sensor_summary": src.summary.get(location, {}),
        "pest_events": [
            {
                "pest_type": p["pest_type"],
                "severity": p["severity"],
                "confidence": p["confidence"],
                "detected_at": _ts(p["detected_at"]),
            }
            for p in pests
        ],
        "has_pest_alerts": alerts,
        "pest_count": len(pests),
        "certificates": [
            {
                "id": str(c["id"]),
                "type": c["type"],
                "issuer": c["issuer"],
                "status": c["status"],
                "expiry_date": _day(c["expiry_date"]),
                "document_url": c["document_url"],
                "score": c["score"],
            }
            for c in certs
        ],
        "is_certified": bool(valid),
        "certification_types": valid,
        "metadata": {
            "is_certified": bool(valid),
            "pest_alert_active": alerts,
            "sensor_health": _health(src.health.get(location, []), now),
        },
        "status": status,  # "live" is resolved by the caller (published or ready_to_publish)
        "finished": status != "live",
    }
    return snap


# --------------------------------------------------------------------------- canonical forms

LISTING_FIELDS = (
    "id",
    "booking_id",
    "crop_type",
    "grade",
    "quantity_kg",
    "farmer_id",
    "vendor_id",
    "location_id",
    "quality_score",
    "freshness",
    "shelf_life_days",
    "sensors",
    "sensor_summary",
    "pest_events",
    "pest_count",
    "has_pest_alerts",
    "certificates",
    "is_certified",
    "certification_types",
    "metadata",
    "status",
)


def _ts(value: Any, *, ms: bool = False) -> str | None:
    """A timestamp as ISO-8601 UTC text; ``ms`` truncates to BSON's milliseconds."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:  # BSON datetimes read without tz_aware are UTC
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if ms:
        value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    return str(value.isoformat())


def _day(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # a listing stores a date as midnight UTC
        value = value.astimezone(UTC).date()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return _ts(value)
    return value


def _at_ms(view: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical form with every timestamp truncated to milliseconds (for listings)."""
    out = dict(view)
    for key in ("start_date", "end_date"):
        if out.get(key) is not None:
            out[key] = _ts(out[key], ms=True)
    out["sensors"] = {
        t: {**s, "reading_time": _ts(s["reading_time"], ms=True)}
        for t, s in (view.get("sensors") or {}).items()
    }
    out["pest_events"] = [
        {**p, "detected_at": _ts(p["detected_at"], ms=True)} for p in view.get("pest_events") or []
    ]
    return out


def _listed(view: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a snapshot's canonical form that its listing holds."""
    return {k: v for k, v in _at_ms(view).items() if k in LISTING_FIELDS}


def canonical_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A market_inventory_snapshots row in the comparison's form."""
    view = {k: _plain(row[k]) for k in Snapshot.model_fields if k != "finished_at"}
    view["sensors"] = {
        t: {**s, "reading_time": _ts(s["reading_time"])} for t, s in (row["sensors"] or {}).items()
    }
    view["pest_events"] = [
        {**p, "detected_at": _ts(p["detected_at"])} for p in row["pest_events"] or []
    ]
    view["certificates"] = [
        {**c, "expiry_date": _day(c.get("expiry_date"))} for c in row["certificates"] or []
    ]
    view["certification_types"] = list(row["certification_types"] or [])
    view["finished"] = row["finished_at"] is not None
    return view


def canonical_listing(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A market_listings document in the comparison's form (timestamps to milliseconds)."""
    view = {k: _plain(doc.get(k)) for k in LISTING_FIELDS if k != "id"}
    view["id"] = str(doc.get("_id"))
    if doc.get("snapshot_id") != doc.get("_id"):
        view["id"] = f"{doc.get('_id')} (snapshot_id {doc.get('snapshot_id')})"
    view["sensors"] = {
        t: {**s, "reading_time": _ts(s["reading_time"], ms=True)}
        for t, s in (doc.get("sensors") or {}).items()
    }
    view["pest_events"] = [
        {**p, "detected_at": _ts(p["detected_at"], ms=True)} for p in doc.get("pest_events") or []
    ]
    view["certificates"] = [
        {**c, "expiry_date": _day(c.get("expiry_date"))} for c in doc.get("certificates") or []
    ]
    view["certification_types"] = list(doc.get("certification_types") or [])
    return view


# --------------------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class Scope:
    """Which bookings to verify: all of them, or those of some farmers or some booking ids."""

    farmers: frozenset[UUID] | None = None
    bookings: frozenset[UUID] | None = None

    def admits(self, farmer: UUID, booking: UUID) -> bool:
        if self.farmers is not None and farmer not in self.farmers:
            return False
        return self.bookings is None or booking in self.bookings


def _short(value: Any, limit: int = 240) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Finding:
    sink: Sink
    kind: Kind
    booking_id: str
    # field -> (stored, expected); empty for lost and extra
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        head = f"{self.kind} {self.sink} {self.booking_id}"
        if not self.fields:
            return head
        parts = [
            f"{k}: stored={_short(s)} expected={_short(e)}"
            for k, (s, e) in sorted(self.fields.items())
        ]
        return head + "\n    " + "\n    ".join(parts)


@dataclass
class Report:
    now: datetime
    bookings: int = 0
    rows: int = 0
    listings: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> Counter[tuple[Sink, Kind]]:
        return Counter((f.sink, f.kind) for f in self.findings)

    @property
    def clean(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        c = self.counts
        return (
            f"verify at {self.now.isoformat()}: {self.bookings} bookings, "
            f"{self.rows} rows (lost {c['row', 'lost']}, regressed {c['row', 'regressed']}, "
            f"extra {c['row', 'extra']}), {self.listings} listings (lost "
            f"{c['listing', 'lost']}, regressed {c['listing', 'regressed']}, extra "
            f"{c['listing', 'extra']})"
        )


def _diff(stored: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The fields that differ; within objects (sensors, metadata) down to the differing key."""
    out: dict[str, tuple[Any, Any]] = {}
    for k in want:
        s, w = stored.get(k), want.get(k)
        if s == w:
            continue
        if isinstance(s, Mapping) and isinstance(w, Mapping):
            out.update({f"{k}.{sub}": d for sub, d in _diff(s, {**dict.fromkeys(s), **w}).items()})
        else:
            out[k] = (s, w)
    return out


def _best(
    stored: Mapping[str, Any], candidates: Iterable[Mapping[str, Any]]
) -> dict[str, tuple[Any, Any]]:
    """The differences from the candidate that matches best (none when one matches)."""
    best: dict[str, tuple[Any, Any]] | None = None
    for want in candidates:
        d = _diff(stored, want)
        if best is None or len(d) < len(best):
            best = d
        if not d:
            break
    return best or {}


def _instants(now: datetime, grace: timedelta, evaluated_at: Any) -> list[datetime]:
    instants = [now, now - grace]
    if isinstance(evaluated_at, datetime):
        at = evaluated_at if evaluated_at.tzinfo else evaluated_at.replace(tzinfo=UTC)
        if now - grace <= at <= now:
            instants.append(at)
    return instants


def _want(
    src: Sources,
    row: Mapping[str, Any],
    stored: Mapping[str, Any],
    now: datetime,
    published: bool,
) -> dict[str, Any]:
    """What ``row`` should hold at ``now``; ``published`` says a live one has its listing."""
    snap = expected(src, row["booking_id"], row, now)
    if snap["status"] == "live":
        snap["status"] = "published" if published else "ready_to_publish"
    if row["booking_id"] not in src.bookings:  # deleted: its details went with its row
        own = BOOKING_FIELDS if row["inspection_id"] else BOOKING_FIELDS + QUALITY_FIELDS
        snap.update({k: stored[k] for k in own})
    return snap


def compare(
    src: Sources,
    rows: Mapping[UUID, Mapping[str, Any]],
    listings: Mapping[UUID, Mapping[str, Any]],
    *,
    now: datetime,
    grace: timedelta,
    auto_publish: bool,
    retention: timedelta,
) -> Report:
    """Compare every row and listing with the recomputation; pure (the tables already read)."""
    report = Report(now=now, bookings=len(src.bookings), rows=len(rows), listings=len(listings))
    add = report.findings.append
    for booking_id in sorted(set(src.bookings) | set(rows) | set(listings), key=str):
        bid = str(booking_id)
        row, doc, b = rows.get(booking_id), listings.get(booking_id), src.bookings.get(booking_id)
        if row is None:
            if doc is not None:
                add(Finding("listing", "extra", bid))
            if b is not None and not (
                b["status"] in ("completed", "cancelled") and b["updated_at"] < now - retention
            ):
                add(Finding("row", "lost", bid))
            continue
        finished_at = row["finished_at"]
        if finished_at is not None and finished_at < now - retention - timedelta(days=1):
            add(Finding("row", "extra", bid))
            if doc is not None:
                add(Finding("listing", "extra", bid))
            continue
        wants_listing = auto_publish or row["market_listing_id"] is not None
        stored_row = canonical_row(row)

        instants = _instants(now, grace, row["evaluated_at"])
        wanted = [_want(src, row, stored_row, t, wants_listing) for t in instants]
        if d := _best(stored_row, wanted):
            add(Finding("row", "regressed", bid, d))
        if doc is None:
            if wants_listing:
                add(Finding("listing", "lost", bid))
            continue
        instants = _instants(now, grace, doc.get("evaluated_at"))
        candidates = [_listed(_want(src, row, stored_row, t, True)) for t in instants]
        if d := _best(canonical_listing(doc), candidates):
            add(Finding("listing", "regressed", bid, d))
    return report


def verify(
    settings: Settings,
    *,
    now: datetime,
    scope: Scope = Scope(),
    grace: timedelta | None = None,
) -> Report:
    """Read both sinks and the source tables and compare them (see the module docstring)."""
    if now.tzinfo is None:
        raise OpsError(f"now must carry a time zone, got {now.isoformat()}")
    if grace is None:
        grace = timedelta(seconds=3 * settings.tick_interval_s + 10)
    retention = timedelta(days=settings.cleanup_after_days)
    try:
        with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
            rows = read_rows(conn, scope)
            client: MongoClient[dict[str, Any]] = MongoClient(
                settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000
            )
            try:
                listings, unreadable = read_listings(client, settings, scope)
            finally:
                client.close()
            # Read the sources last: a row written meanwhile is then never newer than them.
            src = read_sources(conn, scope, rows, since=now - grace)
    except psycopg.Error as exc:
        raise OpsError(f"postgres: {exc}") from exc
    except Exception as exc:  # pymongo's errors have no common root with psycopg's
        if type(exc).__module__.startswith("pymongo"):
            raise OpsError(f"mongodb: {exc}") from exc
        raise
    report = compare(
        src,
        rows,
        listings,
        now=now,
        grace=grace,
        auto_publish=settings.auto_publish,
        retention=retention,
    )
    if scope == Scope():
        report.findings.extend(Finding("listing", "extra", f"_id={i}") for i in unreadable)
    return report


def main(settings: Settings, *, now: datetime, scope: Scope, grace: timedelta | None) -> int:
    report = verify(settings, now=now, scope=scope, grace=grace)
    for finding in report.findings:
        print(finding.describe())
    print(report.summary())
    if not report.clean:
        print("mis verify: differences found", file=sys.stderr)
    return 0 if report.clean else 1
