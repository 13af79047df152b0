"""What a key's state costs to parse and to write, per kind of state (no services needed).

    python -m streams.benchmarks.states            # make bench-states

Every batch that changes a key reads its state from the table (unless the agent's cache holds
it) and writes it back, so these two costs are paid per key and batch. States of the shapes the
storm and the load make: a location with five sensors, ``--history`` readings each and 15
subscribers; the same location with its readings as one pydantic model per reading (the form
states had before the packed series, kept here as the comparison); a booking linked to its
three parts; a vendor with 15 certificates and 500 subscribers. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from schemas.entities import Booking, Certificate, PestDetection, SensorReading
from schemas.envelope import make_version
from streams.bench import table
from streams.messages import CertificateChanged, ReadingChanged
from streams.state import (
    BookingState,
    KeyState,
    LocationState,
    Slot,
    VendorState,
    Versioned,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class ModelLocation(KeyState):
    """A location whose readings are one model each, per series (the comparison)."""

    readings: dict[str, list[Versioned[SensorReading]]] = {}
    pests: dict[str, Versioned[PestDetection]] = {}


def location(history: int) -> LocationState:
    loc, state, n = uuid.uuid4(), LocationState(), 0
    for sensor in range(5):
        for k in range(history):
            n += 1
            row = SensorReading(
                id=1_000_000 + n,
                location_id=loc,
                sensor_id=f"sensor-{sensor}",
                sensor_type="temperature",
                value=3.5 + k / 10,
                unit="celsius",
                reading_time=NOW - timedelta(seconds=k),
            )
            version = make_version(0x1A2B3C4D5E + n, 0x1A2B3C4D5E + n)
            state.apply_reading(ReadingChanged(deleted=False, version=version, row=row), history=99)
    state.subscribers = sorted(str(uuid.uuid4()) for _ in range(15))
    return state


def as_models(state: LocationState) -> ModelLocation:
    return ModelLocation(
        subscribers=state.subscribers,
        version=state.version,
        readings=state.history(),
    )


def vendor() -> VendorState:
    vid, state = uuid.uuid4(), VendorState()
    for n in range(15):
        row = Certificate(
            id=uuid.uuid4(),
            vendor_id=vid,
            type="organic",
            issuer="issuer",
            status="active",
            expiry_date=(NOW + timedelta(days=300)).date(),
        )
        state.apply_certificate(
            CertificateChanged(deleted=False, version=make_version(n + 1, n + 1), row=row)
        )
    state.subscribers = sorted(str(uuid.uuid4()) for _ in range(500))
    return state


def booking() -> BookingState:
    b = Booking(
        id=uuid.uuid4(),
        farmer_id=uuid.uuid4(),
        vendor_id=uuid.uuid4(),
        location_id=uuid.uuid4(),
        crop_type="maize",
        quantity_kg=100,
        status="confirmed",
        start_date=NOW,
        end_date=NOW + timedelta(days=5),
    )
    version = make_version(7, 7)
    return BookingState(
        booking=b,
        booking_version=version,
        location=Slot(fk=str(b.location_id), version=version),
        vendor=Slot(fk=str(b.vendor_id), version=version),
        watermark=version,
        last_hash="0" * 64,
    )


def per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    n, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        for _ in range(50):
            fn()
        n += 50
    return elapsed / n * 1e6


def in_memory_kib(cls: type[BaseModel], raw: bytes) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [cls.model_validate_json(raw) for _ in range(50)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / len(kept) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.benchmarks.states", description=__doc__
    )
    parser.add_argument("--history", type=int, default=16, help="readings per sensor")
    parser.add_argument("--seconds", type=float, default=1.0, help="per figure")
    args = parser.parse_args(argv)
    loc = location(args.history)
    states: list[tuple[str, BaseModel]] = [
        (f"location, 5 sensors x {args.history} readings (packed)", loc),
        (f"location, 5 sensors x {args.history} readings (a model each)", as_models(loc)),
        ("booking, three links", booking()),
        ("vendor, 15 certificates, 500 subscribers", vendor()),
    ]
    rows = []
    for name, state in states:
        raw = state.model_dump_json().encode()
        cls = type(state)
        parse = per_call_us(lambda: cls.model_validate_json(raw), args.seconds)  # noqa: B023
        write = per_call_us(state.model_dump_json, args.seconds)
        memory = in_memory_kib(cls, raw)
        rows.append([name, f"{len(raw):,}", f"{parse:,.0f}", f"{write:,.0f}", f"{memory:,.1f}"])
    print(
        table(
            ["state", "stored bytes", "parse (us)", "write (us)", "parsed, in memory (KiB)"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
