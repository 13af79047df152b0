"""Issue 4: the Storage Guard HTTP API, served by real workers on the real stack.

Three groups, each with workers of its own (an app id of its own, so its own consumer group):
one worker with auto-publish on, two workers sharing the partitions, and one worker with
auto-publish off. Only one group's workers run at a time: workers of two pipelines would both
write market_inventory_snapshots, and an auto-publishing one would publish what the other is
meant to hold back.

Every answer is checked against the schema the OpenAPI document declares for its status.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from schemas.snapshot import snapshot_id
from streams import source_db, topology
from streams.api import openapi
from streams.api.auth import digest as auth_digest
from streams.api.middleware import STREAMING_ROUTES
from streams.config import Settings
from tests.integration.workers import (
    API_TOKEN,
    READ_TOKEN,
    Worker,
    pipeline_drained,
    snapshot_row,
    wait_for,
)

DOC = openapi.document()
SETTLE = 60.0  # seconds for a source change to reach the snapshot and the listing
SNAPSHOT = "/storage-guard/snapshots/{booking_id}"
BOOKINGS = "/storage-guard/bookings"
SYNC_ALL = "/storage-guard/snapshots/sync-all"
JOB = "/storage-guard/jobs/{job_id}"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
REPO = Path(__file__).resolve().parents[2]
CONNECTOR = json.loads((REPO / "connectors" / "storage_guard-source.json").read_text())


class Http:
    """One worker's HTTP API, called with the tests' token; keeps every answer it got."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.base = f"http://127.0.0.1:{worker.web_port}"
        self.session = requests.Session()
        self.session.headers.update(AUTH)
        self.answers: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        resp = self.session.request(method, self.base + path, timeout=60, **kwargs)
        self.answers.append(f"{resp.status_code} {dict(resp.headers)}\n{resp.text}")
        return resp

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def post_until_answered(self, path: str, timeout: float = SETTLE) -> requests.Response:
        """POST a request that is safe to repeat, again after each 503 ("retry", says the API:
        a dependency or the worker's event loop was busy past MIS_API_TIMEOUT_S)."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.post(path)
            if resp.status_code != 503 or time.monotonic() > deadline:
                return resp
            time.sleep(1.0)

    def snapshot(self, booking_id: UUID) -> dict[str, Any] | None:
        resp = self.get(SNAPSHOT.format(booking_id=booking_id))
        if resp.status_code == 404:
            return None
        return conforms(resp, "GET", SNAPSHOT)["snapshot"]

    def wait_snapshot(
        self, booking_id: UUID, check: Callable[[dict[str, Any]], bool], timeout: float = SETTLE
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            snap = self.snapshot(booking_id)
            return snap if snap is not None and check(snap) else None

        return wait_for(f"snapshot of {booking_id} via :{self.worker.web_port}", probe, timeout)

    def metrics(self) -> dict[str, list[Any]]:
        resp = self.get("/metrics")
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
        return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}

    def sync_all(self, timeout: float = SETTLE) -> dict[str, Any]:
        """Start sync-all, poll its job until it is done; the job as last answered."""
        resp = self.post(SYNC_ALL)
        started = conforms(resp, "POST", SYNC_ALL)
        assert resp.status_code == 202 and resp.headers["Location"] == started["location"]
        assert started["location"] == JOB.format(job_id=started["job_id"])

        def finished() -> dict[str, Any] | None:
            job = conforms(self.get(started["location"]), "GET", JOB)
            return job if job["status"] != "running" else None

        job = wait_for(f"sync-all job {started['job_id']}", finished, timeout)
        assert job["status"] == "succeeded", job
        return job


def conforms(resp: requests.Response, method: str, template: str) -> Any:
    """The JSON body of ``resp``, validated against the schema declared for its status."""
    responses = DOC["paths"][template][method.lower()]["responses"]
    declared = responses.get(str(resp.status_code))
    assert declared is not None, (
        f"{method} {template} answered an undeclared {resp.status_code}: {resp.text[:300]}"
    )
    (media_type,) = declared["content"]
    assert resp.headers["Content-Type"].startswith(media_type)
    body = resp.json()
    schema = declared["content"][media_type]["schema"]
    Draft202012Validator({**schema, "components": DOC["components"]}).validate(body)
    return body


def refused(resp: requests.Response, status: int) -> str:
    """A 4xx answer in the API's error shape; returns its message."""
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def problem(resp: requests.Response, status: int) -> str:
    """A 401/403 as RFC 9457 problem details with a Bearer challenge; returns its detail."""
    message = refused(resp, status)
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["detail"] == message and body["title"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    return message


def start_workers(
    names: tuple[str, ...], workdir: Path, env: dict[str, str] | None = None
) -> list[Worker]:
    app_id = f"mis-api-{uuid.uuid4().hex[:8]}"
    workers = [Worker(name, app_id, workdir, env).start() for name in names]
    try:
        for w in workers:
            w.wait_ready(timeout=180)
        for w in workers:
            http = Http(w)
            # Ready to answer, and owning partitions (with two, once the rebalance is done).
            wait_for(
                f"worker {w.name} to own partitions",
                partial(_owns_partitions, http),
                timeout=120,
                every=1.0,
            )
    except BaseException:
        for w in workers:
            w.stop()
        raise
    return workers


def _owns_partitions(http: Http) -> bool:
    try:
        body = http.get("/health").json()
    except (requests.RequestException, ValueError):
        return False
    return bool(body["worker"]["assigned_partitions"] > 0)


def published_with_its_reading(snapshot: dict[str, Any]) -> bool:
    """Published, and showing the place's reading. The reading reaches its location another way
    than the booking (the gatherer): a booking's first snapshot can come before it, and the next
    one has it."""
    return snapshot["status"] == "published" and "temperature" in snapshot["sensors"]


class Place:
    """A farmer with a completed inspection, a certified vendor and a location with a reading."""

    def __init__(self, pg: Any) -> None:
        self.pg = pg
        self.farmer, self.vendor, self.location = uuid4(), uuid4(), uuid4()
        self.inspection = source_db.insert(
            pg,
            "crop_inspections",
            farmer_id=self.farmer,
            crop_type="maize",
            status="completed",
            quality_score=Decimal("91.50"),
            freshness="fresh",
            shelf_life_days=20,
        )
        source_db.insert(
            pg,
            "certificates",
            **source_db.certificate_values(
                vendor_id=self.vendor, type="haccp", expiry_date=date.today() + timedelta(days=300)
            ),
        )
        source_db.insert(
            pg,
            "sensor_readings",
            location_id=self.location,
            sensor_id="t-1",
            sensor_type="temperature",
            value=4.5,
            unit="C",
            reading_time=datetime.now(UTC),
        )

    def body(self, **changes: Any) -> dict[str, Any]:
        return {
            "location_id": str(self.location),
            "vendor_id": str(self.vendor),
            "crop_type": "maize",
            "quantity_kg": 1500,
            "duration_days": 30,
            "ai_inspection_id": str(self.inspection),
            "grade": "A",
            **changes,
        }

    def booking(self, **changes: Any) -> UUID:
        """A confirmed booking written straight to storage_bookings, as another app would."""
        values = source_db.booking_values(
            farmer_id=self.farmer,
            vendor_id=self.vendor,
            location_id=self.location,
            crop_type="maize",
            quantity_kg=800,
            ai_inspection_id=self.inspection,
            status="confirmed",
            duration_days=10,
        )
        return UUID(str(source_db.insert(self.pg, "storage_bookings", **{**values, **changes})))

    def bookings_count(self) -> int:
        row = self.pg.execute(
            "SELECT count(*) FROM storage_bookings WHERE farmer_id = %s OR vendor_id = %s",
            (self.farmer, self.vendor),
        ).fetchone()
        return int(row[0])


def listing(mongo_db: Any, booking_id: UUID) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = mongo_db["market_listings"].find_one(
        {"_id": str(snapshot_id(booking_id))}
    )
    return doc


# =========================================================================== one worker


@pytest.fixture(scope="class")
def one(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    (worker,) = start_workers(("one",), tmp_path_factory.mktemp("api-one"))
    try:
        yield Http(worker)
    finally:
        worker.stop()


class TestOneWorker:
    def test_openapi_document_is_served(self, one: Http) -> None:
        resp = one.get("/openapi.json")
        assert resp.status_code == 200
        assert resp.json() == json.loads(json.dumps(DOC))

    def test_health_reports_every_dependency_up(self, one: Http) -> None:
        body = conforms(one.get("/health"), "GET", "/health")
        assert body["status"] == "ok"
        assert set(body["checks"]) == {"postgres", "mongodb", "kafka", "connector"}
        assert all(c["status"] == "up" for c in body["checks"].values())
        assert body["checks"]["connector"]["state"] == "RUNNING"
        assert body["worker"]["assigned_partitions"] > 0

    def test_a_booking_made_through_the_api_becomes_a_published_snapshot(
        self, one: Http, pg: Any, mongo_db: Any
    ) -> None:
        place = Place(pg)
        resp = one.post(BOOKINGS, params={"farmer_id": str(place.farmer)}, json=place.body())
        body = conforms(resp, "POST", BOOKINGS)
        assert resp.status_code == 201
        booking_id = UUID(body["booking"]["id"])
        assert (
            resp.headers["Location"]
            == body["snapshot_url"]
            == f"/storage-guard/snapshots/{booking_id}"
        )
        assert body["booking"]["status"] == "pending"
        stored = pg.execute(
            "SELECT farmer_id, quantity_kg, end_date - start_date FROM storage_bookings "
            "WHERE id = %s",
            (booking_id,),
        ).fetchone()
        assert stored == (place.farmer, 1500, timedelta(days=30))

        snap = one.wait_snapshot(booking_id, published_with_its_reading)
        assert snap["booking_id"] == str(booking_id)
        assert snap["id"] == str(snapshot_id(booking_id))
        assert (snap["crop_type"], snap["quantity_kg"], snap["grade"]) == ("maize", 1500, "A")
        assert snap["quality_score"] == 91.5 and snap["inspection_status"] == "completed"
        assert snap["is_certified"] and snap["certification_types"] == ["haccp"]
        assert snap["sensors"]["temperature"]["value"] == 4.5
        assert snap["market_listing_id"] == str(snapshot_id(booking_id))
        doc = wait_for("the listing", lambda: listing(mongo_db, booking_id), timeout=SETTLE)
        assert doc["quantity_kg"] == 1500 and doc["status"] == "published"

    def test_unknown_and_malformed_ids(self, one: Http) -> None:
        unknown = uuid4()
        for method, template in (
            ("GET", SNAPSHOT),
            ("POST", SNAPSHOT + "/publish"),
            ("POST", SNAPSHOT + "/reconcile"),
        ):
            resp = one.request(method, template.format(booking_id=unknown))
            assert str(unknown) in refused(resp, 404)
            conforms(resp, method, template)
            for bad in ("not-a-uuid", "12345", f"{{{unknown}}}", str(unknown)[:-1]):
                resp = one.request(method, template.format(booking_id=bad))
                assert "UUID" in refused(resp, 422)
                conforms(resp, method, template)

    def test_publish_rewrites_the_listing(self, one: Http, pg: Any, mongo_db: Any) -> None:
        place = Place(pg)
        booking_id = place.booking()
        one.wait_snapshot(booking_id, published_with_its_reading)
        wait_for("the listing", lambda: listing(mongo_db, booking_id), timeout=SETTLE)
        before = snapshot_row(pg, booking_id)
        assert before is not None
        mongo_db["market_listings"].delete_one({"_id": str(snapshot_id(booking_id))})

        resp = one.post(SNAPSHOT.format(booking_id=booking_id) + "/publish")
        body = conforms(resp, "POST", SNAPSHOT + "/publish")
        assert resp.status_code == 200
        assert body["listing_id"] == str(snapshot_id(booking_id))
        assert body["status"] == "published"
        doc = listing(mongo_db, booking_id)
        assert doc is not None and doc["content_hash"] == before["content_hash"]
        after = snapshot_row(pg, booking_id)
        assert after is not None and after["last_synced_at"] > before["last_synced_at"]
        assert after["published_at"] == before["published_at"]

    def test_publish_refuses_a_withdrawn_snapshot(self, one: Http, pg: Any) -> None:
        place = Place(pg)
        booking_id = place.booking()
        one.wait_snapshot(booking_id, published_with_its_reading)
        source_db.update(pg, "storage_bookings", booking_id, status="cancelled")
        one.wait_snapshot(booking_id, lambda s: s["status"] == "withdrawn")
        resp = one.post(SNAPSHOT.format(booking_id=booking_id) + "/publish")
        assert "withdrawn" in refused(resp, 409)
        conforms(resp, "POST", SNAPSHOT + "/publish")

    def test_sync_all_is_a_job_that_answers_per_booking(self, one: Http) -> None:
        job = one.sync_all()
        body = job["result"]
        assert body["total"] == len(body["results"]) == job["progress"]["processed"]
        assert body["published"] == sum(1 for r in body["results"] if r["success"])
        assert job["progress"]["published"] == body["published"] and job["finished_at"]
        resp = one.get(JOB.format(job_id=uuid4()))
        assert "no job" in refused(resp, 404)
        conforms(resp, "GET", JOB)
        resp = one.get(JOB.format(job_id="nope"))
        assert "UUID" in refused(resp, 422)
        conforms(resp, "GET", JOB)

    def test_every_operation_but_health_needs_a_token_with_its_scope(
        self, one: Http, pg: Any
    ) -> None:
        booking = SNAPSHOT.format(booking_id=uuid4())
        calls = [
            ("GET", booking, SNAPSHOT, "read"),
            ("POST", booking + "/publish", SNAPSHOT + "/publish", "publish"),
            ("POST", booking + "/reconcile", SNAPSHOT + "/reconcile", "operate"),
            ("POST", SYNC_ALL, SYNC_ALL, "operate"),
            ("GET", JOB.format(job_id=uuid4()), JOB, "operate"),
            ("POST", BOOKINGS + f"?farmer_id={uuid4()}", BOOKINGS, "operate"),
            ("GET", "/metrics", "/metrics", "metrics"),
            ("GET", "/openapi.json", "/openapi.json", None),
        ]
        bad = "mis_" + uuid4().hex + uuid4().hex
        for method, path, template, scope in calls:
            for headers in ({"Authorization": ""}, {"Authorization": f"Bearer {bad}"}):
                resp = one.request(method, path, headers=headers)
                assert bad not in problem(resp, 401), (method, path)
                conforms(resp, method, template)
            resp = one.request(method, path, headers={"Authorization": f"Bearer {READ_TOKEN}"})
            if scope in ("read", None):
                assert resp.status_code not in (401, 403), (method, path, resp.text[:200])
                continue
            assert f"'{scope}'" in problem(resp, 403), (method, path)
            assert f'scope="{scope}"' in resp.headers["WWW-Authenticate"]
            conforms(resp, method, template)
        unauthenticated = requests.get(f"{one.base}/health", timeout=60)
        assert unauthenticated.status_code == 200
        assert one.request("GET", "/nowhere", headers={"Authorization": ""}).status_code == 401

    def test_reconcile_heals_a_missed_change_and_a_drifted_listing(
        self, one: Http, pg: Any, mongo_db: Any
    ) -> None:
        place = Place(pg)
        booking_id = place.booking()
        one.wait_snapshot(booking_id, published_with_its_reading)
        wait_for("the listing", lambda: listing(mongo_db, booking_id), timeout=SETTLE)

        # A change the pipeline never sees: written while its table is out of the publication.
        publication = CONNECTOR["config"]["publication.name"]
        pg.execute(f"ALTER PUBLICATION {publication} DROP TABLE certificates")
        try:
            source_db.insert(
                pg,
                "certificates",
                **source_db.certificate_values(vendor_id=place.vendor, type="organic"),
            )
        finally:
            pg.execute(f"ALTER PUBLICATION {publication} ADD TABLE certificates")
        # And a listing edited behind the pipeline's back.
        mongo_db["market_listings"].update_one(
            {"_id": str(snapshot_id(booking_id))}, {"$set": {"quantity_kg": 1}}
        )
        pipeline_drained(one.worker.env["MIS_APP_ID"])
        assert one.snapshot(booking_id)["certification_types"] == ["haccp"]  # type: ignore[index]

        resp = one.post(SNAPSHOT.format(booking_id=booking_id) + "/reconcile")
        body = conforms(resp, "POST", SNAPSHOT + "/reconcile")
        assert resp.status_code == 202
        assert body["data_collections"] == [
            "public.storage_bookings",
            "public.crop_inspections",
            "public.sensor_readings",
            "public.pest_detections",
            "public.certificates",
        ]
        assert {
            "data_collection": "public.certificates",
            "filter": f"vendor_id = '{place.vendor}'",
        } in body["additional_conditions"]
        signal = pg.execute(
            "SELECT type, data FROM debezium_signal WHERE id = %s", (body["signal_id"],)
        ).fetchone()
        assert signal is not None and signal[0] == "execute-snapshot"
        assert json.loads(signal[1])["type"] == "incremental"
        assert body["listing_republished"] is True
        assert listing(mongo_db, booking_id)["quantity_kg"] == 800  # type: ignore[index]

        snap = one.wait_snapshot(
            booking_id, lambda s: s["certification_types"] == ["haccp", "organic"]
        )
        assert snap["status"] == "published"
        wait_for(
            "the healed listing",
            lambda: (
                (listing(mongo_db, booking_id) or {}).get("certification_types")
                == ["haccp", "organic"]
            ),
            timeout=SETTLE,
        )

    def test_reconcile_of_a_booking_not_in_the_source_is_404(self, one: Http) -> None:
        resp = one.post(SNAPSHOT.format(booking_id=uuid4()) + "/reconcile")
        assert "storage_bookings" in refused(resp, 404)

    def test_bad_input_gets_a_4xx_and_changes_nothing(self, one: Http, pg: Any) -> None:
        place = Place(pg)
        other = Place(pg)  # another farmer, with an inspection of their own
        farmer = {"farmer_id": str(place.farmer)}
        as_json = {"Content-Type": "application/json"}
        bodies: list[tuple[str, Any, int]] = [
            ("a JSON array", [place.body()], 422),
            ("negative quantity", place.body(quantity_kg=-1), 422),
            ("quantity as text", place.body(quantity_kg="9"), 422),
            ("huge quantity", place.body(quantity_kg=2**40), 422),
            ("zero days", place.body(duration_days=0), 422),
            ("vendor not a UUID", place.body(vendor_id="v-1"), 422),
            ("crop type too long", place.body(crop_type="x" * 121), 422),
            ("NUL in text", place.body(crop_type="ma\u0000ize"), 422),
            ("naive start date", place.body(start_date="2027-01-01T00:00:00"), 422),
            ("unknown field", place.body(status="active"), 422),
            ("missing field", {"vendor_id": str(place.vendor)}, 422),
            ("unknown inspection", place.body(ai_inspection_id=str(uuid4())), 422),
            ("another's inspection", place.body(ai_inspection_id=str(other.inspection)), 422),
        ]
        cases: list[tuple[str, dict[str, Any], int]] = [
            (name, {"params": farmer, "json": body}, status) for name, body, status in bodies
        ]
        cases += [
            ("malformed JSON", {"params": farmer, "data": b"{oops", "headers": as_json}, 400),
            ("empty body", {"params": farmer, "data": b"", "headers": as_json}, 400),
            ("not UTF-8", {"params": farmer, "data": b"\xff\xfe{}", "headers": as_json}, 400),
            ("no farmer_id", {"json": place.body()}, 422),
            ("farmer_id not a UUID", {"params": {"farmer_id": "f-1"}, "json": place.body()}, 422),
            ("farmer_id twice", {"params": [("farmer_id", str(place.farmer))] * 2}, 422),
            ("form data", {"params": farmer, "data": {"crop_type": "maize"}}, 415),
            ("oversized", {"params": farmer, "data": b" " * 70_000, "headers": as_json}, 413),
            ("oversized, chunked", {"params": farmer, "data": iter([b" " * 40_000] * 2)}, 413),
        ]
        for name, kwargs, status in cases:
            resp = one.post(BOOKINGS, **kwargs)
            assert resp.status_code == status, (name, resp.status_code, resp.text[:300])
            refused(resp, status)
            conforms(resp, "POST", BOOKINGS)
        assert place.bookings_count() == 0

        resp = one.post(SNAPSHOT.format(booking_id=uuid4()) + "/publish", data=b"x" * 70_000)
        refused(resp, 413)
        assert "no such path" in refused(one.get("/storage-guard/nothing-here"), 404)
        resp = one.request("DELETE", "/health")
        refused(resp, 405)
        assert resp.headers["Allow"] == "GET"

    def test_a_booking_id_is_taken_once(self, one: Http, pg: Any) -> None:
        place = Place(pg)
        booking_id = uuid4()
        body = place.body(id=str(booking_id))
        first = one.post(BOOKINGS, params={"farmer_id": str(place.farmer)}, json=body)
        assert first.status_code == 201 and first.json()["booking"]["id"] == str(booking_id)
        again = one.post(BOOKINGS, params={"farmer_id": str(place.farmer)}, json=body)
        assert str(booking_id) in refused(again, 409)
        conforms(again, "POST", BOOKINGS)
        assert place.bookings_count() == 1

    def test_metrics_cover_topics_sinks_lag_and_freshness(
        self, one: Http, pg: Any, settings: Settings
    ) -> None:
        place = Place(pg)
        one.wait_snapshot(place.booking(), published_with_its_reading)
        app_id = one.worker.env["MIS_APP_ID"]
        booking_topic = topology.key_space_topic(app_id, "booking")

        def lag_partitions() -> set[str] | None:
            samples = one.metrics().get("mis_consumer_lag_messages", [])
            found = {s.labels["partition"] for s in samples if s.labels["topic"] == booking_topic}
            return found if len(found) == settings.partitions else None

        # Ticks reach every booking partition each second, so each one gets committed offsets.
        wait_for("lag of every booking partition", lag_partitions, timeout=60)
        families = one.metrics()
        topics_in = {s.labels["topic"] for s in families["mis_events_in"]}
        assert {settings.cdc_topic("storage_bookings"), booking_topic} <= topics_in
        assert topology.snapshot_topic(app_id) in {
            s.labels["topic"] for s in families["mis_events_out"]
        }
        assert "mis_dead_letters" in families

        # The sinks run in processes of their own, whose metrics reach /metrics within a second.
        def sink_families() -> dict[str, Any] | None:
            families = one.metrics()
            sinks = {s.labels["sink"] for s in families["mis_sink_latency_seconds"]}
            fresh = {s.labels["sink"] for s in families["mis_snapshot_freshness_seconds"]}
            return families if sinks == fresh == {"postgres", "mongodb"} else None

        families = wait_for("both sinks' metrics", sink_families, timeout=30)
        freshness = {s.labels["sink"]: s.value for s in families["mis_snapshot_freshness_seconds"]}
        assert all(0 <= v < 60 for v in freshness.values())
        http = {(s.labels["route"], s.labels["status"]) for s in families["mis_http_requests"]}
        assert ("/storage-guard/snapshots/{booking_id}", "200") in http

    def test_health_is_503_while_the_connector_is_paused(
        self, one: Http, settings: Settings
    ) -> None:
        name = CONNECTOR["name"]
        connector = f"{settings.connect_url}/connectors/{name}"
        requests.put(f"{connector}/pause", timeout=30).raise_for_status()
        try:

            def unavailable() -> list[requests.Response]:
                resp = one.get("/health")
                return [resp] if resp.status_code == 503 else []  # a 503 Response is falsy

            (resp,) = wait_for("health to see the paused connector", unavailable, timeout=60)
            body = conforms(resp, "GET", "/health")
            assert body["status"] == "unavailable"
            assert body["checks"]["connector"] == {
                "status": "down",
                "error": body["checks"]["connector"]["error"],
                "state": "PAUSED",
                "tasks": body["checks"]["connector"]["tasks"],
            }
            assert body["checks"]["postgres"]["status"] == "up"
        finally:
            requests.put(f"{connector}/resume", timeout=30).raise_for_status()
        wait_for("health to recover", lambda: one.get("/health").status_code == 200, timeout=60)

    def test_fuzzing_the_openapi_document_finds_no_server_error(self, one: Http) -> None:
        failures = fuzz(f"{one.base}/openapi.json", examples_per_mode=50)
        assert not failures, "\n\n".join(failures)

    def test_no_secret_in_the_log_the_metrics_the_answers_or_the_document(
        self, one: Http, settings: Settings
    ) -> None:
        """Last of the class: everything the worker wrote since it started is searched."""
        bad = "mis_" + uuid4().hex + uuid4().hex
        as_json = {"Content-Type": "application/json"}
        for auth in (
            API_TOKEN,
            f"Bearer {API_TOKEN}",
            f"Bearer {bad}",
            f"Bearer {READ_TOKEN}",
            f"Basic {bad}",
            f"Bearer {API_TOKEN} {bad}",
        ):
            headers = {"Authorization": auth}
            one.request("GET", SNAPSHOT.format(booking_id=uuid4()), headers=headers)
            one.request("GET", SNAPSHOT.format(booking_id="x"), headers=headers)
            one.request("POST", SNAPSHOT.format(booking_id=uuid4()) + "/publish", headers=headers)
            one.request("POST", SYNC_ALL, headers=headers)
            one.request(
                "POST", BOOKINGS, params={"farmer_id": "f"}, data=b"{", headers=headers | as_json
            )
            one.request("GET", "/nowhere", headers=headers)
            one.request("GET", "/metrics", headers=headers)
        written = {
            "the worker's log": one.worker.log_path.read_text(errors="replace"),
            "/metrics": one.get("/metrics").text,
            "/openapi.json": one.get("/openapi.json").text,
            "the answers": "\n".join(one.answers),
        }
        statuses = {int(answer.split(" ", 1)[0]) for answer in one.answers}
        assert {200, 202, 400, 401, 403, 404, 422} <= statuses, statuses
        password = settings.pg_password.get_secret_value()
        secrets = {
            "the tests' token": API_TOKEN,
            "the read-only token": READ_TOKEN,
            "a refused token": bad,
            "a token's digest": auth_digest(API_TOKEN),
            "the Postgres DSN": settings.pg_dsn,
            "the Postgres password": f"password={password}",
        }
        # The default password is a word the answers use ("postgres" is a dependency's name);
        # `make test` starts its stack with a password of its own.
        if password != "postgres":
            secrets["the bare Postgres password"] = password
        leaks = [
            f"{secret} in {where}"
            for secret, value in secrets.items()
            for where, text in written.items()
            if value in text
        ]
        assert not leaks, leaks


# =========================================================================== two workers


@pytest.fixture(scope="class")
def pair(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, Http]]:
    a, b = start_workers(("a", "b"), tmp_path_factory.mktemp("api-pair"))
    try:
        yield Http(a), Http(b)
    finally:
        for w in (a, b):
            w.stop()


def same_answer(
    pair: tuple[Http, Http], method: str, path: str, template: str, **kwargs: Any
) -> tuple[int, Any]:
    """Send one request to both workers; both must answer it alike. Returns (status, body)."""
    first, second = (http.request(method, path, **kwargs) for http in pair)
    assert first.status_code == second.status_code, (path, first.text[:200], second.text[:200])
    one, other = conforms(first, method, template), conforms(second, method, template)
    assert one == other, (path, one, other)
    return first.status_code, one


class TestTwoWorkers:
    def test_both_workers_own_partitions_and_report_the_same_health(
        self, pair: tuple[Http, Http], settings: Settings
    ) -> None:
        bodies = [conforms(http.get("/health"), "GET", "/health") for http in pair]
        assert all(b["status"] == "ok" for b in bodies)
        assert bodies[0]["worker"]["app_id"] == bodies[1]["worker"]["app_id"]
        assert all(b["worker"]["assigned_partitions"] > 0 for b in bodies)
        assert pair[0].get("/openapi.json").json() == pair[1].get("/openapi.json").json()

    def test_the_same_requests_give_the_same_answers(
        self, pair: tuple[Http, Http], pg: Any, mongo_db: Any
    ) -> None:
        a, b = pair
        place = Place(pg)
        booking_id = uuid4()
        body = place.body(id=str(booking_id))
        created = a.post(BOOKINGS, params={"farmer_id": str(place.farmer)}, json=body)
        assert created.status_code == 201, created.text
        # The same booking sent to the other worker is the same booking: a conflict.
        assert str(booking_id) in refused(
            b.post(BOOKINGS, params={"farmer_id": str(place.farmer)}, json=body), 409
        )
        b.wait_snapshot(booking_id, published_with_its_reading)
        a.wait_snapshot(booking_id, published_with_its_reading)
        path = SNAPSHOT.format(booking_id=booking_id)
        same_answer(pair, "GET", path, SNAPSHOT)

        published = [
            conforms(h.post(path + "/publish"), "POST", SNAPSHOT + "/publish") for h in pair
        ]
        assert {p["listing_id"] for p in published} == {str(snapshot_id(booking_id))}
        assert listing(mongo_db, booking_id) is not None
        same_answer(pair, "GET", path, SNAPSHOT)

        # A reconcile asks Debezium again and republishes: repeating it after a 503 is harmless.
        reconciled = [h.post_until_answered(path + "/reconcile") for h in pair]
        bodies = [conforms(r, "POST", SNAPSHOT + "/reconcile") for r in reconciled]
        assert [r.status_code for r in reconciled] == [202, 202], [r.text for r in reconciled]
        for key in ("booking_id", "data_collections", "additional_conditions"):
            assert bodies[0][key] == bodies[1][key]
        assert bodies[0]["signal_id"] != bodies[1]["signal_id"]

        jobs = [h.sync_all() for h in pair]
        # A job lives on the worker that runs it.
        assert "no job" in refused(b.get(JOB.format(job_id=jobs[0]["job_id"])), 404)

        unknown = SNAPSHOT.format(booking_id=uuid4())
        assert same_answer(pair, "GET", unknown, SNAPSHOT)[0] == 404
        assert same_answer(pair, "POST", unknown + "/publish", SNAPSHOT + "/publish")[0] == 404
        bad = SNAPSHOT.format(booking_id="nope")
        assert same_answer(pair, "GET", bad, SNAPSHOT)[0] == 422
        status, _ = same_answer(
            pair,
            "POST",
            BOOKINGS,
            BOOKINGS,
            params={"farmer_id": str(place.farmer)},
            json=place.body(quantity_kg=-3),
        )
        assert status == 422 and place.bookings_count() == 1

    def test_each_partition_lag_is_reported_by_the_one_worker_that_owns_it(
        self, pair: tuple[Http, Http], settings: Settings
    ) -> None:
        topic = topology.key_space_topic(pair[0].worker.env["MIS_APP_ID"], "booking")

        def owned(http: Http) -> set[str]:
            samples = http.metrics().get("mis_consumer_lag_messages", [])
            return {s.labels["partition"] for s in samples if s.labels["topic"] == topic}

        def split() -> tuple[set[str], set[str]] | None:
            a, b = owned(pair[0]), owned(pair[1])
            everything = {str(p) for p in range(settings.partitions)}
            return (a, b) if a | b == everything and not a & b and a and b else None

        wait_for("the booking partitions' lag, split between the workers", split, timeout=90)


# =========================================================================== auto-publish off


@pytest.fixture(scope="class")
def manual(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    (worker,) = start_workers(
        ("manual",), tmp_path_factory.mktemp("api-manual"), {"MIS_AUTO_PUBLISH": "false"}
    )
    try:
        yield Http(worker)
    finally:
        worker.stop()


class TestAutoPublishOff:
    def test_snapshots_wait_until_sync_all_or_publish(
        self, manual: Http, pg: Any, mongo_db: Any
    ) -> None:
        place = Place(pg)
        created = manual.post(BOOKINGS, params={"farmer_id": str(place.farmer)}, json=place.body())
        assert created.status_code == 201, created.text
        first = UUID(created.json()["booking"]["id"])
        second, third = place.booking(), place.booking()
        for booking_id in (first, second, third):
            manual.wait_snapshot(booking_id, lambda s: s["status"] == "ready_to_publish")
        # Both sinks have written what the topics held: an auto-publishing one would have
        # published them by now.
        pipeline_drained(manual.worker.env["MIS_APP_ID"])
        for booking_id in (first, second, third):
            snap = manual.snapshot(booking_id)
            assert snap is not None and snap["status"] == "ready_to_publish"
            assert snap["market_listing_id"] is None and listing(mongo_db, booking_id) is None

        resp = manual.post(SNAPSHOT.format(booking_id=third) + "/publish")
        body = conforms(resp, "POST", SNAPSHOT + "/publish")
        assert resp.status_code == 200 and body["listing_id"] == str(snapshot_id(third))
        assert manual.snapshot(third)["status"] == "published"  # type: ignore[index]
        assert listing(mongo_db, third) is not None

        body = manual.sync_all()["result"]
        results = {UUID(r["booking_id"]): r for r in body["results"]}
        assert body["total"] == len(body["results"]) >= 2
        assert body["published"] == sum(1 for r in body["results"] if r["success"])
        for booking_id in (first, second):
            assert results[booking_id]["success"] is True
            assert results[booking_id]["listing_id"] == str(snapshot_id(booking_id))
            snap = manual.snapshot(booking_id)
            assert snap is not None and snap["status"] == "published"
            assert listing(mongo_db, booking_id) is not None
        assert third not in results  # already published: not waiting any more

        again = manual.sync_all()["result"]
        assert not {first, second, third} & {UUID(r["booking_id"]) for r in again["results"]}

    def test_a_published_listing_follows_changes_without_auto_publish(
        self, manual: Http, pg: Any, mongo_db: Any
    ) -> None:
        place = Place(pg)
        booking_id = place.booking()
        manual.wait_snapshot(booking_id, lambda s: s["status"] == "ready_to_publish")
        assert manual.post(SNAPSHOT.format(booking_id=booking_id) + "/publish").status_code == 200
        source_db.update(pg, "storage_bookings", booking_id, quantity_kg=4321)
        manual.wait_snapshot(booking_id, lambda s: s["quantity_kg"] == 4321)
        wait_for(
            "the listing to follow",
            lambda: (listing(mongo_db, booking_id) or {}).get("quantity_kg") == 4321,
            timeout=SETTLE,
        )


def fuzz(url: str, examples_per_mode: int) -> list[str]:
    """Property-based requests to every operation of the live document, positive and negative.

    Checks: no 5xx; every status, content type and body is one the document declares; input
    the schema forbids is refused.
    """
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Err
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    schema = schemathesis.openapi.from_url(url, headers=AUTH)

    @schema.auth()
    class Bearer:
        """The tests' token on every case, except those meant to lack the Authorization header
        (negative cases), which must then be refused."""

        def get(self, case: Any, context: Any) -> str:
            return API_TOKEN

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    failures: list[str] = []
    operations = 0
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation schemathesis cannot load: {result.err()}")
            continue
        operation = result.ok()
        operations += 1
        if operation.path in STREAMING_ROUTES:
            continue  # open until the client leaves: tests/integration/test_history.py
        takes_input = bool(operation.path_parameters or operation.query or operation.body)
        for mode in GenerationMode:
            if mode is GenerationMode.NEGATIVE and not takes_input:
                continue  # nothing to make invalid

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples_per_mode,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                response = case.call_and_validate(checks=checks)
                statuses.setdefault(case.operation.label, set()).add(response.status_code)

            try:
                run()
            except Exception as exc:
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert operations >= len(openapi.operations(DOC)) - 1  # all but the document itself
    # Authenticated: every operation was answered past the guard, not only refused by it.
    refused_only = {op: found for op, found in statuses.items() if found <= {401, 403}}
    assert statuses and not refused_only, refused_only
    return failures
