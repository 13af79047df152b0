"""Snapshot history and trends on the real stack.

Each change of a booking's snapshot becomes a history row, written by the Postgres sink in the
transaction of its upsert; the API answers them newest first, a page at a time, and averages a
location's versions per time bucket. A snapshot written again adds nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jsonschema
import pytest
import requests

from schemas.jsonschema import CHANGE_SCHEMA_PATH
from streams import source_db
from streams.config import Settings
from streams.sinks.base import Item, Origin
from streams.sinks.postgres import PostgresSink
from streams.sinks.records import record_from_row
from tests.integration.conftest import Consume
from tests.integration.test_api import Http, conforms, refused
from tests.integration.test_sinks import new_booking, reading
from tests.integration.workers import API_TOKEN, REPO, Worker, wait_for

SETTLE = 60.0
HISTORY = "/storage-guard/snapshots/{booking_id}/history"
TRENDS = "/storage-guard/locations/{location_id}/trends"


APP_ID = f"mis-it-history-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def http(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    app_id = APP_ID
    worker = Worker("h1", app_id, tmp_path_factory.mktemp("workers")).start()
    try:
        worker.wait_ready()
        yield Http(worker)
    finally:
        worker.stop()


def history_rows(pg: Any, booking_id: UUID) -> list[dict[str, Any]]:
    with pg.cursor() as cur:
        cur.execute(
            "SELECT * FROM market_inventory_snapshot_history WHERE booking_id = %s "
            "ORDER BY source_version, evaluated_at",
            (booking_id,),
        )
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_changes_become_history_newest_first_and_a_replay_adds_nothing(
    http: Http, pg: Any, settings: Settings
) -> None:
    location = uuid4()
    booking_id = new_booking(pg, location)
    wait_for("the booking's first history entry", lambda: history_rows(pg, booking_id), SETTLE)
    temperatures = (4.0, 6.0, 9.0)
    for i, value in enumerate(temperatures, start=1):
        reading(pg, location, "temperature", value)
        wait_for(
            f"history entry {i}",
            lambda i=i: len(history_rows(pg, booking_id)) > i,  # type: ignore[misc]
            SETTLE,
        )
    rows = history_rows(pg, booking_id)
    # The booking alone, then one version per reading.
    assert len(rows) == len(temperatures) + 1
    assert [r["sensor_summary"].get("temperature_avg") for r in rows] == [None, *temperatures]

    first = conforms(
        http.get(HISTORY.format(booking_id=booking_id), params={"limit": 3}), "GET", HISTORY
    )
    assert [e["sensor_summary"].get("temperature_avg") for e in first["entries"]] == [9.0, 6.0, 4.0]
    assert first["next_before"] is not None
    rest = conforms(
        http.get(
            HISTORY.format(booking_id=booking_id),
            params={"limit": 3, "before": first["next_before"]},
        ),
        "GET",
        HISTORY,
    )
    assert [e["sensor_summary"] for e in rest["entries"]] == [{}]
    assert rest["next_before"] is None

    # Every recorded version written again, as a redelivered batch would: nothing changes.
    sink = PostgresSink(settings.pg_dsn)
    try:
        for row in rows:
            record = record_from_row(row)
            assert sink._write([Item(booking_id, record, Origin("t", 0, 0, None, None))]) == set()
    finally:
        sink.close()
    assert len(history_rows(pg, booking_id)) == len(rows)

    since = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    for bucket in ("hour", "day"):
        trends = conforms(
            http.get(
                TRENDS.format(location_id=location), params={"bucket": bucket, "since": since}
            ),
            "GET",
            TRENDS,
        )
        assert trends["bucket"] == bucket
        buckets = trends["buckets"]
        assert sum(b["snapshots"] for b in buckets) == len(rows)
        assert all(b["bookings"] == 1 for b in buckets)
        if len(buckets) == 1:  # not across an hour's end: the average of the three readings
            expected = round(sum(temperatures) / len(temperatures), 2)
            assert buckets[0]["sensors"]["temperature_avg"] == expected


def test_a_status_change_is_a_listing_change_event_of_its_version(
    http: Http, pg: Any, consume: Consume
) -> None:
    booking_id = new_booking(pg, uuid4())
    wait_for("the booking's first history entry", lambda: history_rows(pg, booking_id), SETTLE)
    source_db.update(pg, "storage_bookings", booking_id, status="completed")
    event = consume(
        f"{APP_ID}-listing-changes",
        lambda r: (
            isinstance(r.value, dict)
            and r.value.get("booking_id") == str(booking_id)
            and r.value.get("kind") == "status_changed"
        ),
        timeout_s=SETTLE,
    )
    jsonschema.validate(event.value, json.loads(CHANGE_SCHEMA_PATH.read_text()))
    newest = history_rows(pg, booking_id)[-1]
    assert event.value["source_version"] == newest["source_version"]
    assert event.value["status"] == "completed" == newest["status"]
    assert event.value["previous_status"] in ("ready_to_publish", "published")


STREAM = "/storage-guard/listing-changes/stream"


class Events:
    """A server-sent event stream of the worker, read event by event."""

    def __init__(self, http: Http, last_event_id: str | None = None, **params: str) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.resp = http.session.get(
            http.base + STREAM, params=params, headers=headers, stream=True, timeout=(10, 60)
        )
        assert self.resp.status_code == 200, self.resp.text[:300]
        assert self.resp.headers["Content-Type"].startswith("text/event-stream")
        self.lines = self.resp.iter_lines(decode_unicode=True)

    def next(self) -> tuple[str, str | None, Any]:
        """(event, id, data) of the next event; comments are skipped."""
        event, event_id, data = "message", None, []
        for line in self.lines:
            if not line:
                if data:
                    return event, event_id, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
        raise AssertionError("the stream ended")

    def change(self) -> tuple[str, dict[str, Any]]:
        """The next listing change (after the ``ready`` event of the start)."""
        event, event_id, data = self.next()
        if event == "ready":
            event, event_id, data = self.next()
        assert event == "listing-change" and event_id is not None, (event, data)
        return event_id, data

    def close(self) -> None:
        self.resp.close()


def test_the_stream_pushes_a_bookings_changes_and_resumes_from_an_event_id(
    http: Http, pg: Any
) -> None:
    booking_id = new_booking(pg, uuid4())
    wait_for("the booking's first history entry", lambda: history_rows(pg, booking_id), SETTLE)
    live = Events(http, booking_id=str(booking_id))
    try:
        event, start, ready = live.next()
        assert event == "ready" and start and ready["filters"] == {"booking_id": str(booking_id)}
        source_db.update(pg, "storage_bookings", booking_id, status="cancelled")
        first_id, first = live.change()
        assert (first["booking_id"], first["kind"]) == (str(booking_id), "status_changed")
        assert first["status"] == "withdrawn"
    finally:
        live.close()
    # Resumed from the position before the event: the event again, nothing lost.
    again = Events(http, last_event_id=start, booking_id=str(booking_id))
    try:
        assert again.change()[1]["event_id"] == first["event_id"]
    finally:
        again.close()
    # Resumed after it: the next change comes first, the first one is not repeated.
    source_db.update(pg, "storage_bookings", booking_id, status="completed")
    after = Events(http, last_event_id=first_id, booking_id=str(booking_id))
    try:
        _, second = after.change()
        assert second["kind"] == "status_changed" and second["status"] == "completed"
        assert second["previous_status"] == "withdrawn"
    finally:
        after.close()


def test_the_live_page_is_served_without_a_token(http: Http) -> None:
    resp = requests.get(http.base + "/storage-guard/live", timeout=30)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert STREAM in resp.text
    refused(http.get(STREAM, params={"booking_id": "x"}), 422)
    refused(http.get(STREAM, headers={"Last-Event-ID": "other-topic:0:1"}), 422)
    resp = requests.get(http.base + STREAM, timeout=30)
    assert resp.status_code == 401


def test_history_and_trends_refuse_bad_parameters(http: Http) -> None:
    refused(http.get(HISTORY.format(booking_id=uuid4())), 404)
    refused(http.get(HISTORY.format(booking_id="nope")), 422)
    refused(http.get(HISTORY.format(booking_id=uuid4()), params={"limit": "0"}), 422)
    refused(http.get(HISTORY.format(booking_id=uuid4()), params={"before": "%%%"}), 422)
    refused(http.get(TRENDS.format(location_id=uuid4()), params={"bucket": "week"}), 422)
    refused(http.get(TRENDS.format(location_id=uuid4()), params={"since": "yesterday"}), 422)
    empty = conforms(http.get(TRENDS.format(location_id=uuid4())), "GET", TRENDS)
    assert empty["buckets"] == []


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None or importlib.util.find_spec("selenium") is None,
    reason="needs Debian's chromium and chromium-driver, and selenium",
)
def test_a_write_to_the_source_appears_on_the_live_page_in_a_real_browser(
    http: Http, pg: Any
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    booking_id = new_booking(pg, uuid4())
    wait_for("the booking's first history entry", lambda: history_rows(pg, booking_id), SETTLE)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(http.base + "/storage-guard/live")
        driver.find_element(By.ID, "token").send_keys(API_TOKEN)
        driver.find_element(By.ID, "booking_id").send_keys(str(booking_id))
        driver.find_element(By.ID, "connect").click()
        state = driver.find_element(By.ID, "state")
        WebDriverWait(driver, SETTLE).until(lambda _: state.text == "live")
        changed = time.monotonic()
        source_db.update(pg, "storage_bookings", booking_id, status="completed")
        selector = f'tr[data-booking-id="{booking_id}"][data-kind="status_changed"]'
        row = WebDriverWait(driver, SETTLE).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, selector)
        )[0]
        print(f"source commit -> browser row: {time.monotonic() - changed:.2f}s")
        assert "completed" in row.text and str(booking_id) in row.text
    finally:
        driver.quit()


PUBLICATION_COLUMNS = {
    "market_listing_id",
    "published_at",
    "last_synced_at",
    "synced_hash",
    "created_at",
    "updated_at",
}


def columns(pg: Any, table: str) -> dict[str, tuple[str, str | None, str]]:
    """name -> (type, collation, nullable) of ``table``'s columns."""
    cur = pg.execute(
        "SELECT column_name, format_type(a.atttypid, a.atttypmod), collation_name, is_nullable "
        "FROM information_schema.columns c "
        "JOIN pg_attribute a ON a.attrelid = c.table_name::regclass AND a.attname = c.column_name "
        "WHERE c.table_name = %s",
        (table,),
    )
    return {name: (type_, collation, nullable) for name, type_, collation, nullable in cur}


def test_the_history_has_the_snapshot_tables_columns_but_its_publication_state(
    http: Http, pg: Any
) -> None:
    from streams.sinks.postgres import HISTORY_COLUMNS

    snapshots = columns(pg, "market_inventory_snapshots")
    history = columns(pg, "market_inventory_snapshot_history")
    assert history.pop("recorded_at")[0] == "timestamp with time zone"
    assert history == {n: c for n, c in snapshots.items() if n not in PUBLICATION_COLUMNS}
    # What the sink copies into it is every one of them.
    assert set(HISTORY_COLUMNS) == set(history)
    assert snapshots["source_version"][1] == "C" == history["source_version"][1]


def run_cleanup(app_id: str, keep_days: int) -> str:
    """`mis cleanup` as the daily crontab runs it, with MIS_HISTORY_KEEP_DAYS=keep_days."""
    env = {**os.environ, "MIS_APP_ID": app_id, "MIS_HISTORY_KEEP_DAYS": str(keep_days)}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "cleanup"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def backdate(pg: Any, booking_id: UUID, days: int, version: str, *, as_booking: UUID) -> None:
    """A copy of ``booking_id``'s current history row, evaluated ``days`` ago, as a version
    ``version`` of ``as_booking``."""
    names = [n for n in columns(pg, "market_inventory_snapshot_history") if n != "recorded_at"]
    copied = [
        {"booking_id": "%(as_booking)s", "source_version": "%(version)s"}.get(
            n, f"{n} - make_interval(days => %(days)s)" if n == "evaluated_at" else n
        )
        for n in names
    ]
    pg.execute(
        f"INSERT INTO market_inventory_snapshot_history ({', '.join(names)}) "
        f"SELECT {', '.join(copied)} FROM market_inventory_snapshots WHERE booking_id = %(b)s",
        {"b": booking_id, "as_booking": as_booking, "version": version, "days": days},
    )


def test_the_daily_cleanup_prunes_versions_older_than_the_history_retention(
    http: Http, pg: Any
) -> None:
    booking_id, stale = new_booking(pg, uuid4()), new_booking(pg, uuid4())
    (current,) = wait_for(
        "the booking's first history entry", lambda: history_rows(pg, booking_id), SETTLE
    )
    wait_for("the other booking's first history entry", lambda: history_rows(pg, stale), SETTLE)
    evicted = uuid4()  # a booking the cleanup evicted long ago: history rows, no snapshot
    old, recent = "0" * 31 + "1", "0" * 31 + "2"
    backdate(pg, booking_id, 200, old, as_booking=booking_id)
    backdate(pg, booking_id, 170, recent, as_booking=booking_id)
    backdate(pg, booking_id, 400, old, as_booking=evicted)
    # A booking unchanged for longer than the retention: its only version is its current one.
    with pg.transaction():
        for table in ("market_inventory_snapshots", "market_inventory_snapshot_history"):
            pg.execute(
                f"UPDATE {table} SET evaluated_at = evaluated_at - interval '200 days' "
                "WHERE booking_id = %s",
                (stale,),
            )
    try:
        # MIS_HISTORY_KEEP_DAYS=0 keeps every version.
        assert "history kept" in run_cleanup(APP_ID, 0)
        assert len(history_rows(pg, booking_id)) == 3 and history_rows(pg, evicted)

        assert "history versions pruned" in run_cleanup(APP_ID, 180)
        kept = [r["source_version"] for r in history_rows(pg, booking_id)]
        assert kept == [recent, current["source_version"]]
        assert history_rows(pg, evicted) == []
        assert len(history_rows(pg, stale)) == 1
    finally:
        pg.execute(
            "DELETE FROM market_inventory_snapshot_history WHERE booking_id = %s", (evicted,)
        )
