"""Steady load on the source tables, as Storage Guard's applications would write it.

A few locations, vendors and farmers of its own (so that ``mis verify`` can be scoped to the
farmers), and a mix of every kind of change: bookings created, updated, moved, cancelled,
completed and deleted; inspections; readings of single and combined devices; pest detections;
certificates issued, revoked and deleted.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg

from streams import source_db

log = logging.getLogger(__name__)


class Load:
    def __init__(self, dsn: str, *, rate: float = 20.0, seed: int = 0, size: int = 4) -> None:
        self.dsn, self.rate = dsn, rate
        self.rng = random.Random(seed)
        self.farmers = [uuid4() for _ in range(size)]
        self.locations = [uuid4() for _ in range(size)]
        self.vendors = [uuid4() for _ in range(size)]
        self.bookings: list[UUID] = []
        self.inspections: list[UUID] = []
        self.pests: list[UUID] = []
        self.certificates: list[UUID] = []
        self.readings: list[int] = []
        self.changes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Load:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        began, n = time.monotonic(), 0
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                self.step(conn)
                self.changes += 1
            except psycopg.Error as exc:
                # Postgres may be the fault: the writers of Storage Guard would retry too.
                self.errors += 1
                log.info("load: write failed (%s); retrying", exc)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.5)
            n += 1
            pause = began + n / self.rate - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)
            elif pause < -5:
                began, n = time.monotonic(), 0
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ one change

    def step(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        if len(self.bookings) < 4 or r.random() < 0.12:
            self._new_booking(conn)
            return
        roll = r.random()
        if roll < 0.40:
            self._reading(conn)
        elif roll < 0.50:
            self._pest(conn)
        elif roll < 0.60:
            self._certificate(conn)
        elif roll < 0.68:
            self._inspection(conn)
        elif roll < 0.92:
            self._booking_change(conn)
        else:
            self._delete(conn)

    def _new_booking(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        now = datetime.now(UTC)
        inspection = r.choice(self.inspections) if self.inspections and r.random() < 0.5 else None
        values = source_db.booking_values(
            farmer_id=r.choice(self.farmers),
            vendor_id=r.choice(self.vendors),
            location_id=r.choice(self.locations),
            crop_type=r.choice(["tomato", "onion", "potato"]),
            quantity_kg=r.randint(10, 5000),
            ai_inspection_id=inspection,
            grade=r.choice(["A", "B", None]),
            status=r.choice(["pending", "confirmed", "active"]),
            duration_days=30,
            start_date=now,
            end_date=now + timedelta(days=30),
        )
        self.bookings.append(source_db.insert(conn, "storage_bookings", **values))

    def _booking_change(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        b = r.choice(self.bookings)
        roll = r.random()
        if roll < 0.5:
            source_db.update(conn, "storage_bookings", b, quantity_kg=r.randint(10, 5000))
        elif roll < 0.7:
            source_db.update(conn, "storage_bookings", b, location_id=r.choice(self.locations))
        elif roll < 0.8 and self.inspections:
            source_db.update(
                conn, "storage_bookings", b, ai_inspection_id=r.choice(self.inspections)
            )
        else:
            status = r.choice(["confirmed", "active", "cancelled", "completed"])
            source_db.update(conn, "storage_bookings", b, status=status)

    def _inspection(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        if self.inspections and r.random() < 0.5:
            source_db.update(
                conn,
                "crop_inspections",
                r.choice(self.inspections),
                status="completed",
                quality_score=Decimal(f"{r.uniform(40, 99):.2f}"),
            )
            return
        self.inspections.append(
            source_db.insert(
                conn,
                "crop_inspections",
                farmer_id=r.choice(self.farmers),
                crop_type="tomato",
                status=r.choice(["pending", "completed"]),
                quality_score=Decimal(f"{r.uniform(40, 99):.2f}"),
                freshness=r.choice(["fresh", "good"]),
                shelf_life_days=r.randint(1, 30),
            )
        )

    def _reading(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        location = r.choice(self.locations)
        device = r.randint(1, 3)
        # Device 1 is a combined temperature/humidity probe; the others report one type.
        kind = r.choice(["temperature", "humidity"]) if device == 1 else "temperature"
        self.readings.append(
            source_db.insert(
                conn,
                "sensor_readings",
                location_id=location,
                sensor_id=f"{str(location)[:8]}-{device}",
                sensor_type=kind,
                value=round(r.uniform(1, 90), 3),
                unit="C" if kind == "temperature" else "%",
                status=r.choice(["active"] * 9 + ["fault"]),
                reading_time=datetime.now(UTC) - timedelta(seconds=r.randint(0, 600)),
            )
        )

    def _pest(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        self.pests.append(
            source_db.insert(
                conn,
                "pest_detections",
                location_id=r.choice(self.locations),
                pest_type=r.choice(["moth", "weevil", "mite"]),
                severity=r.choice(["low", "medium", "high"]),
                confidence=round(r.random(), 3),
                detected_at=datetime.now(UTC) - timedelta(days=r.randint(0, 6)),
            )
        )

    def _certificate(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        if self.certificates and r.random() < 0.4:
            source_db.update(conn, "certificates", r.choice(self.certificates), status="revoked")
            return
        self.certificates.append(
            source_db.insert(
                conn,
                "certificates",
                **source_db.certificate_values(
                    vendor_id=r.choice(self.vendors),
                    type=r.choice(["organic", "haccp", "iso22000"]),
                    status=r.choice(["valid", "valid", "pending"]),
                    expiry_date=date.today() + timedelta(days=r.randint(30, 400)),
                    score=r.randint(50, 100),
                ),
            )
        )

    def _delete(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        pools: list[tuple[str, list[Any]]] = [
            ("sensor_readings", self.readings),
            ("pest_detections", self.pests),
            ("certificates", self.certificates),
            ("storage_bookings", self.bookings),
        ]
        table, pool = r.choice([(t, p) for t, p in pools if len(p) > 3] or pools[:1])
        if pool:
            source_db.delete(conn, table, pool.pop(r.randrange(len(pool))))
