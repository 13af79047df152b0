"""The OpenAPI document tells the truth: its operations are the routes, its schemas the answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from uuid import uuid4

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from schemas.snapshot import snapshot_id
from streams.api import auth, openapi
from streams.api.models import (
    AdditionalCondition,
    BookingResponse,
    BookingView,
    DependencyState,
    ErrorResponse,
    HealthResponse,
    JobProgress,
    JobView,
    ProblemResponse,
    PublishResponse,
    ReconcileResponse,
    SnapshotResponse,
    SnapshotView,
    SyncAllResponse,
    SyncResult,
    WorkerInfo,
)
from tests.unit.test_snapshot import build, cert, inspection, pest, reading

DOC = openapi.document()


def validator(ref: str) -> Draft202012Validator:
    """A validator of the component ``ref`` points at, resolving refs inside the document."""
    return Draft202012Validator({"$ref": ref, "components": DOC["components"]})


def declared(method: str, path: str, status: int) -> dict[str, Any]:
    response = DOC["paths"][path][method.lower()]["responses"][str(status)]
    (content,) = response["content"].values()
    return cast(dict[str, Any], content["schema"])


def _worker_app() -> Any:
    from streams.config import get_settings
    from streams.runtime import build

    return build(get_settings(), web=True).app  # the API's routes on its aiohttp application


def test_every_route_is_documented_and_every_operation_is_routed() -> None:
    from faust.web.drivers.aiohttp import Web

    app = _worker_app()

    routed = {
        (route.method, route.resource.canonical)
        for route in cast(Web, app.web).web_app.router.routes()
        if route.resource is not None
    }
    assert routed == openapi.operations(DOC)


def test_every_route_needs_the_scope_the_guard_checks_and_declares_its_refusals() -> None:
    from faust.web.drivers.aiohttp import Web

    app = _worker_app()

    routed = {
        (route.method, route.resource.canonical)
        for route in cast(Web, app.web).web_app.router.routes()
        if route.resource is not None
    }
    assert routed == set(auth.OPERATION_SCOPES) | auth.PUBLIC
    assert DOC["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": DOC["components"]["securitySchemes"]["bearer"]["description"],
    }
    for method, path in routed:
        op = DOC["paths"][path][method.lower()]
        if (method, path) in auth.PUBLIC:
            assert op["security"] == [] and "401" not in op["responses"]
            continue
        scope = auth.OPERATION_SCOPES[(method, path)]
        assert op["security"] == [{"bearer": [scope] if scope else []}], (method, path)
        refusals = {"401", "403"} if scope else {"401"}
        if method == "POST":
            refusals.add("429")
        assert refusals <= set(op["responses"]), (method, path)
        for status in refusals:
            assert set(op["responses"][status]["content"]) == {"application/problem+json"}
        if method == "POST":
            assert "Retry-After" in op["responses"]["429"]["headers"]
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_metrics_is_declared_public_only_when_the_setting_says_so() -> None:
    assert DOC["paths"]["/metrics"]["get"]["security"] == [{"bearer": ["metrics"]}]
    public = openapi.document(metrics_public=True)
    assert public["paths"]["/metrics"]["get"]["security"] == []
    assert "401" not in public["paths"]["/metrics"]["get"]["responses"]


@pytest.mark.parametrize("status", [401, 403, 429])
def test_problem_answers_validate(status: int) -> None:
    method, path = "POST", "/storage-guard/snapshots/{booking_id}/publish"
    body = ProblemResponse(title="x", status=status, detail="why", error="why")
    validator(declared(method, path, status)["$ref"]).validate(body.model_dump(mode="json"))


def test_the_document_is_openapi_3_1_with_valid_json_schemas() -> None:
    assert DOC["openapi"].startswith("3.1")
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    refs = _refs(DOC["paths"])
    assert refs, "the paths refer to component schemas"
    assert {r.rsplit("/", 1)[-1] for r in refs} <= set(DOC["components"]["schemas"])


def test_every_path_parameter_is_declared() -> None:
    for path, item in DOC["paths"].items():
        for op in item.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _snapshot_view() -> SnapshotView:
    snap = build(
        inspection_row=inspection(),
        readings=[reading(1), reading(2, "H-01", "humidity", 80.0, unit="%")],
        pests=[pest(1, "high")],
        certificates=[cert(1), cert(2, "haccp", "revoked")],
    )
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    return SnapshotView(
        **snap.model_dump(),
        market_listing_id=str(snap.id),
        published_at=now,
        last_synced_at=now,
        created_at=now,
        updated_at=None,
    )


def _examples() -> list[tuple[str, str, int, BaseModel]]:
    booking_id, job_id = uuid4(), uuid4()
    now = datetime.now(UTC)
    up = DependencyState(status="up", latency_ms=1.5)
    return [
        (
            "GET",
            "/storage-guard/snapshots/{booking_id}",
            200,
            SnapshotResponse(snapshot=_snapshot_view()),
        ),
        ("GET", "/storage-guard/snapshots/{booking_id}", 404, ErrorResponse(error="no snapshot")),
        (
            "GET",
            "/storage-guard/snapshots/{booking_id}",
            422,
            ErrorResponse(error="bad id", details=[{"loc": ["booking_id"], "msg": "not a UUID"}]),
        ),
        (
            "POST",
            "/storage-guard/snapshots/{booking_id}/publish",
            200,
            PublishResponse(
                booking_id=booking_id,
                listing_id=str(snapshot_id(booking_id)),
                status="published",
                published_at=now,
            ),
        ),
        (
            "POST",
            "/storage-guard/snapshots/sync-all",
            202,
            JobView(
                job_id=job_id,
                kind="sync-all",
                status="running",
                started_at=now,
                finished_at=None,
                progress=JobProgress(pages=0, processed=0, published=0),
                result=None,
                error=None,
                location=f"/storage-guard/jobs/{job_id}",
            ),
        ),
        (
            "GET",
            "/storage-guard/jobs/{job_id}",
            200,
            JobView(
                job_id=job_id,
                kind="sync-all",
                status="succeeded",
                started_at=now,
                finished_at=now,
                progress=JobProgress(pages=1, processed=2, published=1),
                result=SyncAllResponse(
                    total=2,
                    published=1,
                    results=[
                        SyncResult(booking_id=booking_id, success=True, listing_id="x"),
                        SyncResult(booking_id=uuid4(), success=False, error="changed"),
                    ],
                ),
                error=None,
                location=f"/storage-guard/jobs/{job_id}",
            ),
        ),
        (
            "POST",
            "/storage-guard/snapshots/{booking_id}/reconcile",
            202,
            ReconcileResponse(
                booking_id=booking_id,
                signal_id="reconcile-x",
                data_collections=["public.a"],
                additional_conditions=[
                    AdditionalCondition(data_collection="public.a", filter="id = 'x'")
                ],
                listing_republished=False,
            ),
        ),
        (
            "POST",
            "/storage-guard/bookings",
            201,
            BookingResponse(
                booking=BookingView(
                    id=booking_id,
                    farmer_id=uuid4(),
                    vendor_id=uuid4(),
                    location_id=uuid4(),
                    crop_type="maize",
                    grade=None,
                    quantity_kg=10,
                    start_date=now,
                    end_date=now,
                    duration_days=1,
                    ai_inspection_id=None,
                    status="pending",
                    created_at=now,
                ),
                snapshot_url="/storage-guard/snapshots/x",
            ),
        ),
        (
            "GET",
            "/health",
            200,
            HealthResponse(
                status="ok",
                checks={
                    "postgres": up,
                    "connector": DependencyState(status="up", state="RUNNING", tasks=["RUNNING"]),
                },
                worker=WorkerInfo(app_id="a", assigned_partitions=4),
            ),
        ),
        (
            "GET",
            "/health",
            503,
            HealthResponse(
                status="unavailable",
                checks={"kafka": DependencyState(status="down", error="x")},
                worker=WorkerInfo(app_id="a", assigned_partitions=0),
            ),
        ),
    ]


@pytest.mark.parametrize(
    ("method", "path", "status", "model"), _examples(), ids=lambda v: str(v)[:40]
)
def test_answers_validate_against_their_declared_schema(
    method: str, path: str, status: int, model: BaseModel
) -> None:
    schema = declared(method, path, status)
    instance = model.model_dump(mode="json")
    validator(schema["$ref"]).validate(instance)
    if method == "GET" and path == "/health":
        validator(schema["$ref"]).validate(model.model_dump(mode="json", exclude_none=True))


def test_a_snapshot_answer_missing_a_field_does_not_validate() -> None:
    schema = declared("GET", "/storage-guard/snapshots/{booking_id}", 200)
    instance = SnapshotResponse(snapshot=_snapshot_view()).model_dump(mode="json")
    del instance["snapshot"]["pest_events"]
    assert not validator(schema["$ref"]).is_valid(instance)


def test_the_booking_request_schema_refuses_unknown_fields() -> None:
    schema = DOC["paths"]["/storage-guard/bookings"]["post"]["requestBody"]["content"]
    ref = schema["application/json"]["schema"]["$ref"]
    good = {
        "location_id": str(uuid4()),
        "vendor_id": str(uuid4()),
        "crop_type": "maize",
        "quantity_kg": 1,
        "duration_days": 1,
    }
    assert validator(ref).is_valid(good)
    assert not validator(ref).is_valid({**good, "status": "active"})
    assert not validator(ref).is_valid({**good, "quantity_kg": -1})
