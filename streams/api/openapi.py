"""The OpenAPI 3.1 document of the API: paths written here, schemas generated from the models.

OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits, so the models are
the single source of the shapes; tests keep the paths in step with the routes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streams.api.models import (
    BookingRequest,
    BookingResponse,
    ErrorResponse,
    HealthResponse,
    PublishResponse,
    ReconcileResponse,
    SnapshotResponse,
    SyncAllResponse,
)

REF = "#/components/schemas/{model}"
PROMETHEUS = "text/plain"

REQUEST_MODELS: tuple[type[BaseModel], ...] = (BookingRequest,)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    BookingResponse,
    ErrorResponse,
    HealthResponse,
    PublishResponse,
    ReconcileResponse,
    SnapshotResponse,
    SyncAllResponse,
)

ERRORS = {
    400: "the body is not JSON",
    404: "no such booking or snapshot",
    409: "the request conflicts with the current state",
    413: "the body is larger than the limit",
    415: "the body is not application/json",
    422: "a parameter or field breaks a rule",
    503: "Postgres, MongoDB or Kafka did not answer in time; retry",
}

BOOKING_ID = {
    "name": "booking_id",
    "in": "path",
    "required": True,
    "description": "the booking's id (a UUID)",
    "schema": {"type": "string", "format": "uuid"},
}
FARMER_ID = {
    "name": "farmer_id",
    "in": "query",
    "required": True,
    "description": "the farmer who books (a UUID)",
    "schema": {"type": "string", "format": "uuid"},
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _operation(
    summary: str,
    ok: tuple[int, type[BaseModel], str],
    errors: tuple[int, ...],
    *,
    parameters: tuple[dict[str, Any], ...] = (),
    body: type[BaseModel] | None = None,
) -> dict[str, Any]:
    status, model, description = ok
    responses: dict[str, Any] = {str(status): _json(model, description)}
    for code in errors:
        responses[str(code)] = _json(ErrorResponse, ERRORS[code])
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def _paths() -> dict[str, Any]:
    snapshot = "/storage-guard/snapshots/{booking_id}"
    health_ok = _json(HealthResponse, "every dependency is up")
    return {
        snapshot: {
            "get": _operation(
                "The stored snapshot of a booking",
                (200, SnapshotResponse, "the snapshot"),
                (404, 422, 503),
                parameters=(BOOKING_ID,),
            )
        },
        f"{snapshot}/publish": {
            "post": _operation(
                "Publish the snapshot as a Market Connect listing now (again, if published)",
                (200, PublishResponse, "the listing was written"),
                (404, 409, 413, 422, 503),
                parameters=(BOOKING_ID,),
            )
        },
        "/storage-guard/snapshots/sync-all": {
            "post": _operation(
                "Publish every snapshot waiting in ready_to_publish",
                (200, SyncAllResponse, "the outcome per booking"),
                (413, 503),
            )
        },
        f"{snapshot}/reconcile": {
            "post": _operation(
                "Re-read the booking's source rows through Debezium (incremental snapshot)",
                (202, ReconcileResponse, "the signal was written; the rows follow through CDC"),
                (404, 413, 422, 503),
                parameters=(BOOKING_ID,),
            )
        },
        "/storage-guard/bookings": {
            "post": _operation(
                "Create a booking in storage_bookings; its snapshot follows through CDC",
                (201, BookingResponse, "the booking was created"),
                (400, 409, 413, 415, 422, 503),
                parameters=(FARMER_ID,),
                body=BookingRequest,
            )
        },
        "/health": {
            "get": {
                "summary": "The state of each dependency",
                "responses": {
                    "200": health_ok,
                    "503": _json(HealthResponse, "some dependency is down"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this worker",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {PROMETHEUS: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def _schemas() -> dict[str, Any]:
    Mode = Literal["validation", "serialization"]
    models: list[tuple[type[BaseModel], Mode]] = [(m, "validation") for m in REQUEST_MODELS]
    models += [(m, "serialization") for m in RESPONSE_MODELS]
    _, top = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    return schemas


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Storage Guard market inventory snapshots",
            "version": "1.0.0",
            "description": (
                "Served by every worker of the pipeline; any worker answers any request. "
                "Errors are {success: false, error, details?}."
            ),
        },
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in a document."""
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete", "head", "options"}
    }
