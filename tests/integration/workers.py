"""Faust workers of the pipeline as real processes, and waiting for what they produce."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

from streams import source_db
from streams.api.auth import entry

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
#: The tests' callers of the API: fixed tokens, so a failing run can be replayed by hand.
API_TOKEN = "mis_integration-tests-every-scope-5b0c1f9e2d7a4c38"
READ_TOKEN = "mis_integration-tests-read-only-8e41d2a7c96b0f13"
API_TOKENS = " ".join(
    [
        entry("tests", API_TOKEN, ["read", "publish", "operate", "metrics"]),
        entry("tests-read", READ_TOKEN, ["read"]),
    ]
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Worker:
    def __init__(
        self, name: str, app_id: str, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.name, self.workdir = name, workdir
        self.web_port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **os.environ,
            "MIS_APP_ID": app_id,
            "MIS_WEB_PORT": str(self.web_port),
            "MIS_DATA_DIR": str(workdir / f"{name}-data"),
            "MIS_TICK_INTERVAL_S": "1",
            "MIS_API_TOKENS": API_TOKENS,
            # The tests write faster than a client would; the limit itself is a unit test.
            "MIS_API_WRITE_RATE_PER_S": "1000",
            "MIS_API_WRITE_BURST": "1000",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-l", "info"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited: {self.tail()}")
            return "Ready" in self.log_path.read_text(errors="replace")

        wait_for(f"worker {self.name} to be ready", ready, timeout=timeout, every=0.5)

    @contextmanager
    def running(self) -> Iterator[Worker]:
        """The worker started and ready for the block; stopped after it, however it ends."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()

    def unconfirmed_sends(self) -> float | None:
        """The worker's ``mis_unconfirmed_sends``, summed over its tables; None if it did not
        answer."""
        from prometheus_client.parser import text_string_to_metric_families

        from streams.bench import read_metrics

        text = read_metrics(self.web_port, API_TOKEN)
        if not text:
            return None
        found = [
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "mis_unconfirmed_sends"
            for sample in family.samples
        ]
        return sum(found) if found else None

    def wait_confirmed(self, timeout: float = 60.0) -> None:
        """Until every send the worker made is stored as confirmed, so that stopping it now
        leaves nothing to be sent again by the next worker."""
        wait_for(
            f"worker {self.name} to store its sends as confirmed",
            lambda: self.unconfirmed_sends() == 0,
            timeout=timeout,
            every=0.5,
        )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def snapshot_row(pg: Any, booking_id: Any) -> dict[str, Any] | None:
    cur = pg.execute(
        "SELECT * FROM market_inventory_snapshots WHERE booking_id = %s", (booking_id,)
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row, strict=True))


def insert_booking(pg: Any, booking: UUID, location: UUID, vendor: UUID) -> None:
    """An active booking of rice at ``location``, with the given id."""
    source_db.insert(
        pg,
        "storage_bookings",
        **source_db.booking_values(
            farmer_id=uuid4(),
            vendor_id=vendor,
            location_id=location,
            crop_type="rice",
            quantity_kg=10,
            status="active",
        ),
        id=booking,
    )


def insert_temperature(pg: Any, location: UUID, value: float) -> None:
    """A reading of sensor t-1 at ``location``; a larger value is a later reading."""
    source_db.insert(
        pg,
        "sensor_readings",
        location_id=location,
        sensor_id="t-1",
        sensor_type="temperature",
        value=value,
        unit="C",
        reading_time=datetime.now(UTC) + timedelta(seconds=value),
    )


def synced_temperature(pg: Any, booking: UUID) -> float | None:
    """The booking's temperature once its snapshot row and its listing show the same content."""
    row = snapshot_row(pg, booking)
    if row is None or row["synced_hash"] != row["content_hash"] or not row["sensors"]:
        return None
    return float(row["sensors"]["temperature"]["value"])


def booking_at_temperature_1(pg: Any) -> tuple[UUID, UUID]:
    """A new location with a temperature of 1.0 and a booking there, once the booking's row and
    listing show it: (location, booking)."""
    location, booking = uuid4(), uuid4()
    insert_temperature(pg, location, 1.0)
    insert_booking(pg, booking, location, uuid4())
    wait_for("the first snapshot", lambda: synced_temperature(pg, booking) == 1.0, timeout=60)
    return location, booking


def reading_ends() -> dict[tuple[str, int], int]:
    """The reading topic's end offsets now (see readings_gathered)."""
    from streams.config import Settings
    from streams.ops.kafka import Kafka

    settings = Settings()
    kafka, topic = Kafka(settings.kafka_bootstrap), settings.cdc_topic("sensor_readings")
    counts = kafka.partitions([topic])
    return {
        tp: high
        for tp, (_, high) in kafka.watermarks((topic, p) for p in range(counts[topic])).items()
    }


def readings_gathered(app_id: str, since: dict[tuple[str, int], int], count: int) -> None:
    """Wait until the ``count`` readings written after ``since`` (reading_ends()) are captured
    and the app's gatherers committed them: their messages are then on the location topic,
    ahead of any subscription a booking written after this sends (a reading and a booking
    otherwise reach the location by paths of their own)."""
    from streams import topology
    from streams.config import Settings
    from streams.ops.kafka import Kafka

    kafka = Kafka(Settings().kafka_bootstrap)
    group = topology.gather_group(app_id)
    ends: dict[tuple[str, int], int] = {}

    def captured() -> bool:
        ends.update(reading_ends())
        return sum(ends.values()) - sum(since.get(tp, 0) for tp in ends) >= count

    wait_for("the readings to be captured", captured, timeout=60)

    def gathered() -> bool:
        committed = kafka.committed(group)
        return all(
            committed.get(tp, 0) >= high for tp, high in ends.items() if high > since.get(tp, 0)
        )

    wait_for("the readings to be gathered", gathered, timeout=60)


def pipeline_drained(app_id: str, timeout: float = 120.0) -> None:
    """Wait until the app's pipeline has worked off everything its topics hold: the workers,
    the gatherers and both sinks have committed every partition of the CDC topics, the key
    spaces' topics and the snapshot topic up to the ends those had, and the snapshot topic's
    ends stayed the same through two more such rounds (what the last messages caused has
    then been written too). Ticks keep arriving meanwhile; they change no snapshot that is
    current."""
    from streams import topology
    from streams.config import Settings
    from streams.ops.follow import pipeline_committed, reached
    from streams.ops.kafka import Kafka

    settings = Settings()
    kafka = Kafka(settings.kafka_bootstrap)
    snapshots = topology.snapshot_topic(app_id)
    topics = [*topology.cdc_topics(settings), *topology.key_space_topics(app_id), snapshots]
    tps = [(t, p) for t, n in kafka.partitions(topics).items() for p in range(n)]
    deadline = time.monotonic() + timeout
    quiet, last = 0, None
    while quiet < 2:
        marks = kafka.watermarks(tps)
        ends = {tp: high for tp, (_, high) in marks.items()}
        floor = {tp: low for tp, (low, _) in marks.items()}
        wait_for(
            f"the pipeline of {app_id} to consume what its topics held",
            lambda ends=ends, floor=floor: reached(pipeline_committed(kafka, app_id), ends, floor),
            timeout=max(1.0, deadline - time.monotonic()),
        )
        written = {tp: end for tp, end in ends.items() if tp[0] == snapshots}
        quiet = quiet + 1 if written == last else 0
        last = written
