"""The OpenAPI document tells the truth: its operations are the routes, its schemas the answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from uuid import uuid4

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from schemas.snapshot import snapshot_id
from streams.api import openapi
from streams.api.models import (
    AdditionalCondition,
    BookingResponse,
    BookingView,
    DependencyState,
    ErrorResponse,
    HealthResponse,
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
    return response["content"]["application/json"]["schema"]


def test_every_route_is_documented_and_every_operation_is_routed() -> None:
    from faust.web.drivers.aiohttp import Web

    from streams.web import app  # registers the routes on the worker's aiohttp application

    routed = {
        (route.method, route.resource.canonical)
        for route in cast(Web, app.web).web_app.router.routes()
        if route.resource is not None
    }
    assert routed == openapi.operations(DOC)


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
    booking_id = uuid4()
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
            200,
            SyncAllResponse(
                total=2,
                published=1,
                results=[
                    SyncResult(booking_id=booking_id, success=True, listing_id="x"),
                    SyncResult(booking_id=uuid4(), success=False, error="changed"),
                ],
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
