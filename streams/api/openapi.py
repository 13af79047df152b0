"""The OpenAPI 3.1 document of the API: paths written here, schemas generated from the models.

OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits, so the models are
the single source of the shapes; tests keep the paths in step with the routes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streams.api.auth import METRICS_ROUTE, OPERATION_SCOPES, PUBLIC, SCOPES
from streams.api.models import (
    BookingRequest,
    BookingResponse,
    ErrorResponse,
    HealthResponse,
    HistoryResponse,
    JobView,
    ProblemResponse,
    PublishResponse,
    ReconcileResponse,
    SnapshotResponse,
    SyncAllResponse,
    TrendsResponse,
)

REF = "#/components/schemas/{model}"
PROMETHEUS = "text/plain"

REQUEST_MODELS: tuple[type[BaseModel], ...] = (BookingRequest,)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    BookingResponse,
    ErrorResponse,
    HealthResponse,
    JobView,
    HistoryResponse,
    ProblemResponse,
    PublishResponse,
    ReconcileResponse,
    SnapshotResponse,
    SyncAllResponse,
    TrendsResponse,
)
BEARER = "bearer"
PROBLEM_JSON = "application/problem+json"

ERRORS = {
    400: "the body is not JSON",
    404: "no such booking or snapshot",
    409: "the request conflicts with the current state",
    413: "the body is larger than the limit",
    415: "the body is not application/json",
    422: "a parameter or field breaks a rule",
    503: "Postgres, MongoDB or Kafka did not answer in time; retry",
}
PROBLEMS = {
    401: (
        "no bearer token, or not one this API accepts",
        {"WWW-Authenticate": "Bearer realm=..., error=invalid_token when a token was refused"},
    ),
    403: (
        "the token lacks the scope this operation needs",
        {"WWW-Authenticate": "Bearer ..., error=insufficient_scope, scope=the one needed"},
    ),
    429: (
        "the token's write rate is spent (MIS_API_WRITE_RATE_PER_S, MIS_API_WRITE_BURST)",
        {"Retry-After": "seconds until the next write of this token is accepted"},
    ),
}

UUID = {"type": "string", "format": "uuid"}
DATE_TIME = {"type": "string", "format": "date-time"}
TEXT = {"type": "string"}


def _parameter(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


BOOKING_ID = _parameter("booking_id", "path", "the booking's id (a UUID)", UUID, True)
JOB_ID = _parameter(
    "job_id", "path", "the id a POST that started the job answered (a UUID)", UUID, True
)
FARMER_ID = _parameter("farmer_id", "query", "the farmer who books (a UUID)", UUID, True)
LOCATION_ID = _parameter("location_id", "path", "the storage location's id (a UUID)", UUID, True)
HISTORY_PARAMETERS = (
    _parameter(
        "limit",
        "query",
        "entries per page",
        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    ),
    _parameter(
        "before", "query", "the next_before of the previous page: entries older than its last", TEXT
    ),
)
TRENDS_PARAMETERS = (
    _parameter(
        "bucket",
        "query",
        "the width of a bucket (UTC)",
        {"type": "string", "enum": ["hour", "day"], "default": "hour"},
    ),
    _parameter("since", "query", "ISO 8601 time with a zone; defaults to 7 days ago", DATE_TIME),
)
LISTING_CHANGES_PARAMETERS = (
    *(
        _parameter(name, "query", f"only the changes of this {name[:-3]}", UUID)
        for name in ("booking_id", "location_id", "vendor_id")
    ),
    _parameter(
        "since", "query", "without Last-Event-ID: from this time (else from now)", DATE_TIME
    ),
    _parameter(
        "Last-Event-ID", "header", "the id of the last event received: resume after it", TEXT
    ),
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return _content("application/json", description, _ref(model))


def _content(media: str, description: str, schema: dict[str, Any] = TEXT) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _problem(status: int) -> dict[str, Any]:
    description, headers = PROBLEMS[status]
    return {
        "description": description,
        "headers": {
            name: {
                "description": text,
                "schema": {"type": "integer" if name == "Retry-After" else "string"},
            }
            for name, text in headers.items()
        },
        "content": {PROBLEM_JSON: {"schema": _ref(ProblemResponse)}},
    }


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
        f"{snapshot}/history": {
            "get": _operation(
                "Every content change of the snapshot, newest first, a page at a time",
                (200, HistoryResponse, "a page of the history"),
                (404, 422, 503),
                parameters=(BOOKING_ID, *HISTORY_PARAMETERS),
            )
        },
        "/storage-guard/locations/{location_id}/trends": {
            "get": _operation(
                "Quality and sensor averages of a location's snapshot versions per time bucket",
                (200, TrendsResponse, "the buckets that have data, oldest first"),
                (422, 503),
                parameters=(LOCATION_ID, *TRENDS_PARAMETERS),
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
                "Start publishing every snapshot waiting in ready_to_publish, as a job",
                (
                    202,
                    JobView,
                    "the job (Location: where to poll it); while one runs on this worker, that one",
                ),
                (413, 503),
            )
        },
        "/storage-guard/jobs/{job_id}": {
            "get": _operation(
                "A job of this worker: its progress, then its result (kept in its memory)",
                (200, JobView, "the job"),
                (404, 422),
                parameters=(JOB_ID,),
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
        "/storage-guard/listing-changes/stream": {
            "get": {
                "summary": "Listing changes as they happen, as server-sent events",
                "description": (
                    "Events `ready` (first; its id is the starting position), `listing-change` "
                    "(data: a ListingChange) and `error`; a comment every 15 s. Each id is the "
                    "position <topic>:<partition>:<next offset>,...: sent back as Last-Event-ID "
                    "it resumes the stream where it was."
                ),
                "parameters": list(LISTING_CHANGES_PARAMETERS),
                "responses": {
                    "200": _content(
                        "text/event-stream",
                        "the stream (text/event-stream), open until the client leaves",
                    ),
                    "422": _json(ErrorResponse, ERRORS[422]),
                },
            }
        },
        "/storage-guard/live": {
            "get": {
                "summary": "A page showing listing changes live (it asks for a read token)",
                "responses": {"200": _content("text/html", "HTML")},
            }
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
                "responses": {"200": _content(PROMETHEUS, "Prometheus text exposition format")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": _content("application/json", "OpenAPI 3.1", {"type": "object"})
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


def _secure(paths: dict[str, Any], metrics_public: bool) -> dict[str, Any]:
    """Each operation's security requirement (its scope) and the refusals that come with it."""
    for path, item in paths.items():
        for method, op in item.items():
            route = (method.upper(), path)
            if route in PUBLIC or (route == METRICS_ROUTE and metrics_public):
                op["security"] = []
                continue
            scope = OPERATION_SCOPES[route]
            op["security"] = [{BEARER: [scope] if scope else []}]
            op["responses"]["401"] = _problem(401)
            if scope is not None:
                op["responses"]["403"] = _problem(403)
                op["description"] = f"Needs a bearer token with the scope `{scope}`."
            else:
                op["description"] = "Needs a bearer token (any scope)."
            if method == "post":
                op["responses"]["429"] = _problem(429)
    return paths


@lru_cache(maxsize=2)
def document(metrics_public: bool = False) -> dict[str, Any]:
    """The document; ``metrics_public`` as MIS_API_METRICS_PUBLIC, which changes /metrics."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Storage Guard market inventory snapshots",
            "version": "1.0.0",
            "description": (
                "Served by every worker of the pipeline; any worker answers any request "
                "(jobs excepted: they live on the worker that started them). Every operation "
                "but /health needs `Authorization: Bearer <token>`; a token carries scopes ("
                + ", ".join(sorted(SCOPES))
                + "), and the scope an operation needs is listed in its security requirement. "
                "Errors are {success: false, error, details?}; 401, 403 and 429 are "
                "application/problem+json (RFC 9457) with the same success and error members."
            ),
        },
        "security": [{BEARER: []}],
        "paths": _secure(_paths(), metrics_public),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an opaque token from `mis token create`, not a JWT",
                }
            },
        },
    }


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in a document."""
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete", "head", "options"}
    }
