"""`mis verify` on the real stack: a random workload converges to what the source tables say,
and the verifier reports what a hand corrupts, so that it cannot pass vacuously.

The comparison is scoped to this module's farmers: the sink tables are shared by the session.
The last test truncates storage_bookings and pest_detections, which withdraws every booking of
the session that a running worker knows of; it runs after the other modules (alphabetical order)
and after this module's first test.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from streams import source_db
from streams.config import Settings
from streams.ops.verify import Report, Scope, verify
from tests.integration.workers import REPO, Worker, wait_for

CONVERGE_S = 120.0
SEED = 1313


def mis_verify(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``mis verify`` run as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "verify", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def worker(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    app_id = f"mis-it-verify-{uuid.uuid4().hex[:8]}"
    with Worker("verify", app_id, tmp_path_factory.mktemp("workers")).running() as w:
        yield w


class Workload:
    """Random writes through the source tables only, as Storage Guard's applications make them."""

    def __init__(self, pg: Any, seed: int) -> None:
        self.pg, self.rnd = pg, random.Random(seed)
        self.now = datetime.now(UTC)
        self.farmers = [uuid4() for _ in range(3)]
        self.locations = [uuid4() for _ in range(3)]
        self.vendors = [uuid4() for _ in range(2)]
        self.inspections: list[UUID] = []
        self.bookings: list[UUID] = []
        self.readings: list[int] = []
        self.pests: list[UUID] = []
        self.certificates: list[UUID] = []

    def add(self, table: str, **values: Any) -> Any:
        return source_db.insert(self.pg, table, **values)

    def reading(self, location: UUID, sensor: str, kind: str, minutes_ago: float) -> int:
        value = round(self.rnd.uniform(2, 95), self.rnd.choice([1, 3, 5]))
        status = self.rnd.choice(["active"] * 5 + ["fault"])
        rid = self.add(
            "sensor_readings",
            location_id=location,
            sensor_id=sensor,
            sensor_type=kind,
            value=value,
            unit={"temperature": "C", "humidity": "%", "co2": "ppm"}[kind],
            status=status,
            reading_time=self.now - timedelta(minutes=minutes_ago),
        )
        self.readings.append(rid)
        return int(rid)

    def populate(self) -> None:
        r = self.rnd
        for _ in range(5):
            self.inspections.append(
                self.add(
                    "crop_inspections",
                    farmer_id=r.choice(self.farmers),
                    crop_type="tomato",
                    status=r.choice(["completed", "pending", "failed"]),
                    quality_score=Decimal(r.randint(5000, 9999)) / 100,
                    freshness=r.choice(["fresh", "good", None]),
                    shelf_life_days=r.randint(3, 30),
                )
            )
        for vendor in self.vendors:
            for kind in ("organic", "haccp", "gap"):
                self.certificates.append(
                    self.add(
                        "certificates",
                        vendor_id=vendor,
                        type=kind,
                        issuer="Board",
                        status=r.choice(["valid", "valid", "revoked", "pending"]),
                        expiry_date=date.today() + timedelta(days=r.choice([-3, 40, 400])),
                        score=r.randint(50, 100),
                    )
                )
        for location in self.locations:
            # combined temperature/humidity devices beside single-type sensors
            for device in ("th-1", "th-2"):
                for minutes in (50, 20, 5):
                    self.reading(location, device, "temperature", minutes + r.random())
                    self.reading(location, device, "humidity", minutes + r.random() + 1)
            self.reading(location, "t-9", "temperature", r.choice([3, 75]))
            self.reading(location, "co2-1", "co2", r.choice([2, 130]))
            for days in (0.1, 2.0, 6.0, 9.0):
                self.pests.append(
                    self.add(
                        "pest_detections",
                        location_id=location,
                        pest_type=r.choice(["moth", "weevil", "rodent"]),
                        severity=r.choice(["low", "medium", "high", "critical"]),
                        confidence=round(r.random(), 2),
                        detected_at=self.now - timedelta(days=days),
                    )
                )
        for _ in range(12):
            values = source_db.booking_values(
                farmer_id=r.choice(self.farmers),
                vendor_id=r.choice(self.vendors),
                location_id=r.choice(self.locations),
                crop_type=r.choice(["tomato", "onion", "maize"]),
                quantity_kg=r.randint(100, 5000),
                ai_inspection_id=r.choice([*self.inspections, None]),
                grade=r.choice(["A", "B", None]),
                status=r.choice(["pending", "confirmed", "active"]),
                duration_days=30,
                start_date=self.now,
                end_date=self.now + timedelta(days=30),
            )
            self.bookings.append(source_db.insert(self.pg, "storage_bookings", **values))

    def churn(self) -> None:
        """Updates and deletes of every table, foreign keys moving, devices reporting on."""
        r = self.rnd
        moved, cancelled, completed, deleted = r.sample(self.bookings, 4)
        source_db.update(self.pg, "storage_bookings", moved, location_id=self.locations[0])
        source_db.update(self.pg, "storage_bookings", cancelled, status="cancelled")
        source_db.update(self.pg, "storage_bookings", completed, status="completed")
        source_db.delete(self.pg, "storage_bookings", deleted)
        source_db.update(
            self.pg, "crop_inspections", self.inspections[0], quality_score=Decimal("42.42")
        )
        source_db.delete(self.pg, "crop_inspections", self.inspections[1])
        source_db.update(self.pg, "certificates", self.certificates[0], status="revoked")
        source_db.delete(self.pg, "certificates", self.certificates[1])
        for rid in r.sample(self.readings, 6):
            source_db.delete(self.pg, "sensor_readings", rid)
        source_db.delete(self.pg, "pest_detections", self.pests[0])
        source_db.update(self.pg, "pest_detections", self.pests[1], severity="critical")
        for location in self.locations:
            for _ in range(10):  # one type of a combined device reporting on and on
                self.reading(location, "th-1", "humidity", r.uniform(0, 4))


def report(settings: Settings, farmers: list[UUID]) -> Report:
    return verify(settings, now=datetime.now(UTC), scope=Scope(farmers=frozenset(farmers)))


def converged(settings: Settings, farmers: list[UUID]) -> Report:
    last: list[Report] = []

    def probe() -> Report | None:
        last[:] = [report(settings, farmers)]
        return last[0] if last[0].clean else None

    try:
        return wait_for("mis verify to find no difference", probe, timeout=CONVERGE_S, every=2)
    except AssertionError as exc:
        findings = "\n".join(f.describe() for f in last[0].findings[:20]) if last else ""
        raise AssertionError(f"{exc}\n{last[0].summary() if last else ''}\n{findings}") from None


def test_a_random_workload_converges_to_the_recomputation(
    worker: Worker, pg: Any, settings: Settings, mongo_db: Any
) -> None:
    load = Workload(pg, SEED)
    load.populate()
    clean = converged(settings, load.farmers)
    assert clean.bookings == 12 and clean.rows == 12 and clean.listings == 12

    load.churn()
    clean = converged(settings, load.farmers)
    assert (clean.bookings, clean.rows, clean.listings) == (11, 12, 12)  # one booking deleted

    # The command itself: exit 0 and a summary line on a clean scope.
    farmers = [a for f in load.farmers for a in ("--farmer", str(f))]
    done = mis_verify(farmers)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lost 0, regressed 0, extra 0" in done.stdout

    # The verifier is not vacuous: a hand-corrupted row and a deleted listing are reported.
    corrupt, unlisted = load.bookings[-1], load.bookings[-2]
    pg.execute(
        "UPDATE market_inventory_snapshots SET quantity_kg = quantity_kg + 1, "
        "sensor_summary = '{}'::jsonb WHERE booking_id = %s",
        (corrupt,),
    )
    mongo_db[settings.mongo_collection].delete_one({"booking_id": str(unlisted)})
    found = report(settings, load.farmers)
    by_booking = {(f.sink, f.kind, f.booking_id): f for f in found.findings}
    assert set(by_booking) == {
        ("row", "regressed", str(corrupt)),
        ("listing", "lost", str(unlisted)),
    }
    fields = set(by_booking["row", "regressed", str(corrupt)].fields)
    assert "quantity_kg" in fields and any(f.startswith("sensor_summary.") for f in fields)
    done = mis_verify(farmers)
    assert done.returncode == 1
    assert "lost 1" in done.stdout and "regressed 1" in done.stdout


@pytest.mark.late(2)
def test_truncate_withdraws_bookings_and_removes_contributions(
    worker: Worker, pg: Any, settings: Settings
) -> None:
    load = Workload(pg, SEED + 1)
    load.populate()
    before = converged(settings, load.farmers)
    assert before.rows == 12

    # One statement, two tables: Debezium emits one truncate event per table.
    pg.execute("TRUNCATE storage_bookings, pest_detections")
    after = converged(settings, load.farmers)
    assert (after.bookings, after.rows) == (0, 12)
    rows = pg.execute(
        "SELECT status, pest_count FROM market_inventory_snapshots WHERE farmer_id = ANY(%s)",
        (load.farmers,),
    ).fetchall()
    assert {(status, pests) for status, pests in rows} == {("withdrawn", 0)}

    # Writes after the TRUNCATE count again.
    load.bookings.clear()
    load.pests.append(
        load.add(
            "pest_detections",
            location_id=load.locations[0],
            pest_type="moth",
            severity="high",
            confidence=0.8,
            detected_at=datetime.now(UTC) - timedelta(hours=1),
        )
    )
    values = source_db.booking_values(
        farmer_id=load.farmers[0],
        vendor_id=load.vendors[0],
        location_id=load.locations[0],
        crop_type="tomato",
        quantity_kg=700,
        status="confirmed",
    )
    fresh = source_db.insert(pg, "storage_bookings", **values)
    again = converged(settings, load.farmers)
    assert (again.bookings, again.rows) == (1, 13)
    row = pg.execute(
        "SELECT status, pest_count FROM market_inventory_snapshots WHERE booking_id = %s",
        (fresh,),
    ).fetchone()
    assert row == ("published", 1)
