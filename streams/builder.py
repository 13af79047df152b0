"""The pure snapshot builder: a booking, its three parts and the time in, a Snapshot out.

This module implements docs/snapshot-contract.md. It does no I/O and imports no faust, psycopg
or pymongo, so the agents call it and the tests exercise it directly.

Decisions the contract leaves open, fixed here so that every process derives the same snapshot:

* Rows are identified by ``id``; the caller should pass at most one row per id. Should an id
  repeat with different content, the row whose canonical JSON sorts last is kept, so the result
  never depends on input order.
* ``pest_events`` are ordered newest first, ties by detection id descending.
* ``certificates`` are ordered by ``(type, id)``.
* A ``sensor_id`` may report several types (a combined temperature/humidity probe). It counts
  once in each of its types: ``sensors`` and ``sensor_summary`` use each sensor_id's latest
  reading *of that type*, so its newest reading of one type never hides its latest of another.
  ``sensor_health`` is about devices: it looks at each sensor_id's newest reading of any type
  (a device whose newest report is under an hour old and ``active`` is up), as
  docs/snapshot-contract.md words it ("the latest reading of every sensor_id").
* ``sensor_summary`` rounds half away from zero on the *shortest decimal text* of the doubles
  (``str(value)``), computed with ``Decimal``: 2.675 gives 2.68 and -1.005 gives -1.01, as
  Postgres' ``round(numeric, 2)`` would, although the binary doubles lie just below those ties
  (Python's ``round(2.675, 2)`` is 2.67). A rounded zero is always ``0.0``, never ``-0.0``.
* Time enters only through ``now`` (aware; normalised to UTC). ``next_deadline`` returns the
  first instant at which the output differs: a pest event is in the window while
  ``detected_at >= now - 7 days``, so it leaves one microsecond (datetime's resolution) after
  ``detected_at + 7 days``; a deadline exactly at ``detected_at + 7 days`` would be "not after
  now" once reached and the event would never be evicted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from typing import TypeVar

from schemas.entities import Booking, Certificate, Inspection, PestDetection, SensorReading
from schemas.snapshot import (
    CertificateView,
    PestEvent,
    SensorHealth,
    SensorValue,
    Snapshot,
    SnapshotMetadata,
    SnapshotStatus,
    snapshot_id,
)

__all__ = [
    "ALERT_SEVERITIES",
    "PEST_WINDOW",
    "SENSOR_STALE_AFTER",
    "LocationView",
    "SharedViews",
    "VendorView",
    "assemble",
    "build_snapshot",
    "content_hash",
    "effective_certificate_status",
    "latest_per_sensor",
    "latest_per_sensor_type",
    "location_view",
    "next_deadline",
    "vendor_view",
]

PEST_WINDOW = timedelta(days=7)
SENSOR_STALE_AFTER = timedelta(hours=1)
ALERT_SEVERITIES = frozenset({"medium", "high", "critical"})
_RESOLUTION = timedelta(microseconds=1)
_CENT = Decimal("0.01")
# Wide enough to hold any finite double to the cent; inf - inf gives NaN instead of raising.
_WIDE = Context(prec=800, traps=[])

_STATUS_BY_BOOKING: dict[str, SnapshotStatus] = {
    "pending": "ready_to_publish",
    "confirmed": "ready_to_publish",
    "active": "ready_to_publish",
    "completed": "completed",
    "cancelled": "withdrawn",
}

_R = TypeVar("_R", SensorReading, PestDetection, Certificate)
_K = TypeVar("_K", bound=Hashable)


# --- helpers -------------------------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    return now.astimezone(UTC)


def _canonical(row: _R) -> str:
    return json.dumps(row.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _dedupe(rows: Iterable[_R]) -> list[_R]:
    by_id: dict[object, _R] = {}
    for row in rows:
        kept = by_id.get(row.id)
        if kept is None or (kept != row and _canonical(row) > _canonical(kept)):
            by_id[row.id] = row
    return list(by_id.values())


def _latest_by(
    readings: Iterable[SensorReading], key: Callable[[SensorReading], _K]
) -> dict[_K, SensorReading]:
    latest: dict[_K, SensorReading] = {}
    for reading in _dedupe(readings):
        k = key(reading)
        kept = latest.get(k)
        if kept is None or (reading.reading_time, reading.id) > (kept.reading_time, kept.id):
            latest[k] = reading
    return latest


def latest_per_sensor(readings: Iterable[SensorReading]) -> dict[str, SensorReading]:
    """The latest reading of each sensor_id, of any type: greatest reading_time, ties by id."""
    return _latest_by(readings, lambda r: r.sensor_id)


def latest_per_sensor_type(
    readings: Iterable[SensorReading],
) -> dict[tuple[str, str], SensorReading]:
    """The latest reading of each (sensor_id, sensor_type): what a location must keep."""
    return _latest_by(readings, lambda r: (r.sensor_id, r.sensor_type))


def _round2(value: Decimal) -> float:
    if not value.is_finite():
        return float(value)
    rounded = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    return 0.0 if rounded == 0 else float(rounded)


def _summary(latest: Iterable[SensorReading]) -> dict[str, float]:
    """Min, avg and max per type over the given readings (one per (sensor_id, sensor_type))."""
    by_type: dict[str, list[Decimal]] = {}
    for reading in sorted(latest, key=lambda r: (r.sensor_id, r.sensor_type)):
        by_type.setdefault(reading.sensor_type, []).append(Decimal(str(reading.value)))
    summary: dict[str, float] = {}
    with localcontext(_WIDE):
        for sensor_type, values in by_type.items():
            summary[f"{sensor_type}_avg"] = _round2(sum(values, Decimal(0)) / len(values))
            summary[f"{sensor_type}_min"] = _round2(min(values))
            summary[f"{sensor_type}_max"] = _round2(max(values))
    return summary


def _is_fresh(reading: SensorReading, now: datetime) -> bool:
    return reading.status == "active" and now - reading.reading_time < SENSOR_STALE_AFTER


def _sensor_health(latest: Iterable[SensorReading], now: datetime) -> SensorHealth:
    fresh = [_is_fresh(r, now) for r in latest]
    if not fresh:
        return "unknown"
    if all(fresh):
        return "ok"
    return "degraded" if any(fresh) else "offline"


def _in_window(pest: PestDetection, now: datetime) -> bool:
    return pest.detected_at >= now - PEST_WINDOW


def _expires_at(expiry: date) -> datetime | None:
    """Midnight UTC of the day after ``expiry``: from then on ``expiry < today``."""
    try:
        return datetime.combine(expiry + timedelta(days=1), time(), tzinfo=UTC)
    except OverflowError:  # date.max never passes
        return None


def effective_certificate_status(certificate: Certificate, now: datetime) -> str:
    """``expired`` once ``expiry_date`` is before today (UTC), whatever status is stored."""
    expiry = certificate.expiry_date
    if expiry is not None and expiry < _utc(now).date():
        return "expired"
    return certificate.status


# --- the builder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocationView:
    """What a snapshot takes from its location's rows at one instant: the same for every
    booking at the location (``location_view``)."""

    sensors: dict[str, SensorValue]
    sensor_summary: dict[str, float]
    pest_events: list[PestEvent]
    has_pest_alerts: bool
    sensor_health: SensorHealth
    #: the first instant after which the view differs (see ``next_deadline``)
    deadline: datetime | None


@dataclass(frozen=True)
class VendorView:
    """What a snapshot takes from its vendor's certificates at one instant."""

    certificates: list[CertificateView]
    certification_types: list[str]
    deadline: datetime | None


def location_view(
    readings: Iterable[SensorReading], pests: Iterable[PestDetection], now: datetime
) -> LocationView:
    """The location's share of a snapshot as of ``now``: its sensors, their summary and
    health, and its pest events in the window."""
    now = _utc(now)
    readings = _dedupe(readings)
    latest = latest_per_sensor(readings)
    in_window = [p for p in _dedupe(pests) if _in_window(p, now)]
    events = sorted(in_window, key=lambda p: (p.detected_at, p.id), reverse=True)

    candidates: list[datetime] = [p.detected_at + PEST_WINDOW + _RESOLUTION for p in in_window]
    stale_at = [r.reading_time + SENSOR_STALE_AFTER for r in latest.values() if _is_fresh(r, now)]
    health = _sensor_health(latest.values(), now)
    if health == "ok":
        candidates.append(min(stale_at))
    elif health == "degraded":
        candidates.append(max(stale_at))

    return LocationView(
        sensors={
            sensor_type: SensorValue(
                value=r.value, unit=r.unit, reading_time=r.reading_time, status=r.status
            )
            for sensor_type, r in _latest_by(readings, lambda r: r.sensor_type).items()
        },
        sensor_summary=_summary(latest_per_sensor_type(readings).values()),
        pest_events=[
            PestEvent(
                pest_type=p.pest_type,
                severity=p.severity,
                confidence=p.confidence,
                detected_at=p.detected_at,
            )
            for p in events
        ],
        has_pest_alerts=any(p.severity in ALERT_SEVERITIES for p in events),
        sensor_health=health,
        deadline=min(candidates, default=None),
    )


def vendor_view(certificates: Iterable[Certificate], now: datetime) -> VendorView:
    """The vendor's share of a snapshot as of ``now``: its certificates with their effective
    status, and the types it holds valid."""
    now = _utc(now)
    rows = _dedupe(certificates)
    views = [
        CertificateView(
            id=c.id,
            type=c.type,
            issuer=c.issuer,
            status=effective_certificate_status(c, now),
            expiry_date=c.expiry_date,
            document_url=c.document_url,
            score=c.score,
        )
        for c in sorted(rows, key=lambda c: (c.type, c.id))
    ]
    candidates: list[datetime] = []
    for c in rows:
        if c.expiry_date is None or c.status == "expired":
            continue
        expires_at = _expires_at(c.expiry_date)
        if expires_at is not None and expires_at > now:
            candidates.append(expires_at)
    return VendorView(
        certificates=views,
        certification_types=sorted({v.type for v in views if v.status == "valid"}),
        deadline=min(candidates, default=None),
    )


class SharedViews:
    """The views of the parts that several bookings evaluated at one instant share: each
    computed once. Keyed by the part object itself, so that a part is never mistaken for
    another; it lives as long as one batch's evaluations."""

    def __init__(self) -> None:
        self._location: dict[int, tuple[object, datetime, LocationView]] = {}
        self._vendor: dict[int, tuple[object, datetime, VendorView]] = {}

    def location(
        self,
        part: object,
        readings: Iterable[SensorReading],
        pests: Iterable[PestDetection],
        now: datetime,
    ) -> LocationView:
        held = self._location.get(id(part))
        if held is not None and held[0] is part and held[1] == now:
            return held[2]
        view = location_view(readings, pests, now)
        self._location[id(part)] = (part, now, view)
        return view

    def vendor(
        self, part: object, certificates: Iterable[Certificate], now: datetime
    ) -> VendorView:
        held = self._vendor.get(id(part))
        if held is not None and held[0] is part and held[1] == now:
            return held[2]
        view = vendor_view(certificates, now)
        self._vendor[id(part)] = (part, now, view)
        return view


def build_snapshot(
    booking: Booking,
    *,
    inspection: Inspection | None,
    readings: Iterable[SensorReading],
    pests: Iterable[PestDetection],
    certificates: Iterable[Certificate],
    deleted: bool,
    now: datetime,
) -> Snapshot:
    """The market inventory snapshot of ``booking`` as of ``now`` (docs/snapshot-contract.md).

    ``readings`` and ``pests`` are the rows at the booking's location, ``certificates`` those
    of its vendor, in any order; ``inspection`` counts only when it is the booking's
    ``ai_inspection_id``. ``deleted`` says the booking row itself was deleted.
    """
    return assemble(
        booking,
        inspection=inspection,
        location=location_view(readings, pests, now),
        vendor=vendor_view(certificates, now),
        deleted=deleted,
    )


def assemble(
    booking: Booking,
    *,
    inspection: Inspection | None,
    location: LocationView,
    vendor: VendorView,
    deleted: bool,
) -> Snapshot:
    """The snapshot of ``booking`` from the views of its location and vendor (taken at the
    same instant) and its inspection."""
    matches = inspection is not None and inspection.id == booking.ai_inspection_id
    quality = inspection if matches else None
    score = None
    if quality is not None and quality.quality_score is not None:
        score = float(quality.quality_score)  # numeric(5,2): 5 digits round-trip a double

    is_certified = bool(vendor.certification_types)
    status: SnapshotStatus = "withdrawn" if deleted else _STATUS_BY_BOOKING[booking.status]
    return Snapshot(
        id=snapshot_id(booking.id),
        booking_id=booking.id,
        farmer_id=booking.farmer_id,
        vendor_id=booking.vendor_id,
        location_id=booking.location_id,
        crop_type=booking.crop_type,
        grade=booking.grade,
        quantity_kg=booking.quantity_kg,
        start_date=booking.start_date,
        end_date=booking.end_date,
        duration_days=booking.duration_days,
        inspection_id=quality.id if quality is not None else None,
        inspection_status=quality.status if quality is not None else None,
        quality_score=score,
        freshness=quality.freshness if quality is not None else None,
        visual_defects=quality.visual_defects if quality is not None else None,
        shelf_life_days=quality.shelf_life_days if quality is not None else None,
        sensors=dict(location.sensors),
        sensor_summary=dict(location.sensor_summary),
        pest_events=list(location.pest_events),
        has_pest_alerts=location.has_pest_alerts,
        pest_count=len(location.pest_events),
        certificates=list(vendor.certificates),
        is_certified=is_certified,
        certification_types=list(vendor.certification_types),
        status=status,
        metadata=SnapshotMetadata(
            is_certified=is_certified,
            pest_alert_active=location.has_pest_alerts,
            sensor_health=location.sensor_health,
        ),
    )


def next_deadline(
    *,
    readings: Iterable[SensorReading],
    pests: Iterable[PestDetection],
    certificates: Iterable[Certificate],
    now: datetime,
) -> datetime | None:
    """The first instant after ``now`` at which ``build_snapshot`` gives a different result
    with the same rows, or None when time alone will change nothing.

    For every ``now <= t < deadline`` the snapshot at ``t`` equals the one at ``now``, and the
    one at the deadline differs. Candidates: an in-window pest event leaving the window; the
    sensor health changing category (``ok`` ends when the first fresh sensor goes stale,
    ``degraded`` when the last one does); a certificate not stored as ``expired`` expiring.
    """
    return earliest(
        location_view(readings, pests, now).deadline, vendor_view(certificates, now).deadline
    )


def earliest(*instants: datetime | None) -> datetime | None:
    return min((t for t in instants if t is not None), default=None)


def content_hash(snapshot: Snapshot) -> str:
    """SHA-256 (hex) of the snapshot's canonical JSON: equal content, equal hash, any process."""
    canonical = json.dumps(snapshot.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
