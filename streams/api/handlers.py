"""The API's aiohttp handlers: parse, call one function, answer JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from streams.api import history, jobs, live, openapi
from streams.api.auth import CALLER
from streams.api.errors import Invalid, NotFound
from streams.api.health import Health
from streams.api.jobs import Jobs
from streams.api.lag import update_consumer_lag
from streams.api.models import (
    BookingRequest,
    BookingResponse,
    HistoryEntry,
    HistoryResponse,
    SnapshotResponse,
    SnapshotView,
    TrendsResponse,
)
from streams.api.publishing import Publishing
from streams.api.reconcile import reconcile
from streams.api.requests import (
    check_content_type,
    parse_json_model,
    parse_uuid,
    read_body,
    single_query_param,
)
from streams.api.store import Store
from streams.clock import clock
from streams.config import Settings
from streams.metrics import exposition, read_texts
from streams.sinks.records import snapshot_fields

SNAPSHOT = "/storage-guard/snapshots/{booking_id}"
# Any one path segment, braces included (aiohttp's default refuses them with a 404): whatever
# is not a UUID there gets the 422 that says so.
SNAPSHOT_ROUTE = "/storage-guard/snapshots/{booking_id:[^/]+}"
HISTORY_LIMIT, HISTORY_MAX = 50, 500
TRENDS_DEFAULT = timedelta(days=7)
PUBLICATION_FIELDS = (
    "market_listing_id",
    "published_at",
    "last_synced_at",
    "created_at",
    "updated_at",
)


@dataclass
class Api:
    """What the handlers share; one per worker, closed with the web server."""

    settings: Settings
    store: Store
    publishing: Publishing
    health: Health
    faust_app: Any
    jobs: Jobs
    # the metrics files of the worker's sink processes, merged into /metrics
    sink_metrics: Callable[[], list[Path]] = list

    async def close(self) -> None:
        await self.jobs.close()
        await self.publishing.close()
        await self.health.close()
        await self.store.close()


API = web.AppKey("api", Api)
routes = web.RouteTableDef()


def answer(
    model: BaseModel, status: int = 200, *, exclude_none: bool = False, **kwargs: Any
) -> web.Response:
    text = model.model_dump_json(exclude_none=exclude_none)
    return web.json_response(text=text, status=status, **kwargs)


def _booking_id(request: web.Request) -> UUID:
    return parse_uuid(request.match_info["booking_id"], "booking_id")


@routes.get(SNAPSHOT_ROUTE, allow_head=False)
async def get_snapshot(request: web.Request) -> web.Response:
    api, booking_id = request.app[API], _booking_id(request)
    row = await api.store.snapshot(booking_id)
    if row is None:
        raise NotFound(f"no snapshot for booking {booking_id}")
    publication = {k: row[k] for k in PUBLICATION_FIELDS}
    view = SnapshotView.model_validate({**snapshot_fields(row), **publication})
    return answer(SnapshotResponse(snapshot=view))


@routes.get(SNAPSHOT_ROUTE + "/history", allow_head=False)
async def get_history(request: web.Request) -> web.Response:
    api, booking_id = request.app[API], _booking_id(request)
    limit = _int_param(request, "limit", HISTORY_LIMIT, 1, HISTORY_MAX)
    raw_before = _optional_param(request, "before")
    before = history.decode_cursor(raw_before) if raw_before is not None else None
    rows = await api.store.history(booking_id, before, limit)
    if not rows and before is None and await api.store.snapshot(booking_id) is None:
        raise NotFound(f"no snapshot history for booking {booking_id}")
    entries = [HistoryEntry.model_validate(history.entry_fields(r)) for r in rows]
    last = entries[-1] if len(entries) == limit else None
    cursor = history.encode_cursor(last.source_version, last.evaluated_at) if last else None
    return answer(HistoryResponse(booking_id=booking_id, entries=entries, next_before=cursor))


@routes.get("/storage-guard/locations/{location_id:[^/]+}/trends", allow_head=False)
async def get_trends(request: web.Request) -> web.Response:
    api = request.app[API]
    location_id = parse_uuid(request.match_info["location_id"], "location_id")
    raw_bucket = _optional_param(request, "bucket")
    bucket = "hour" if raw_bucket is None else raw_bucket
    if bucket not in ("hour", "day"):
        raise Invalid("bucket must be hour or day", [{"loc": ["bucket"], "msg": "hour or day"}])
    raw_since = _optional_param(request, "since")
    now = clock()
    since = history.parse_since(raw_since) if raw_since is not None else now - TRENDS_DEFAULT
    rows = await api.store.trends(location_id, bucket, since)
    body = TrendsResponse.model_validate(
        {"location_id": location_id, "bucket": bucket, "since": since, "buckets": rows}
    )
    return answer(body)


def _optional_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Invalid(f"query parameter {name} is given {len(values)} times", None)
    return str(values[0]) if values else None


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _optional_param(request, name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Invalid(
            f"{name} must be an integer from {low} to {high}, got {raw[:32]!r}",
            [{"loc": [name], "msg": f"integer from {low} to {high}"}],
        )
    return int(raw)


@routes.get(live.STREAM_ROUTE, allow_head=False)
async def listing_changes_stream(request: web.Request) -> web.StreamResponse:
    return await live.stream(request, request.app[API].settings)


@routes.get(live.PAGE_ROUTE, allow_head=False)
async def live_page(request: web.Request) -> web.Response:
    return web.Response(text=live.page(), content_type="text/html")


@routes.post(SNAPSHOT_ROUTE + "/publish")
async def publish(request: web.Request) -> web.Response:
    api = request.app[API]
    return answer(await api.publishing.publish(_booking_id(request)))


@routes.post("/storage-guard/snapshots/sync-all")
async def sync_all(request: web.Request) -> web.Response:
    api = request.app[API]

    def work(progress: jobs.Progress) -> Any:
        return jobs.sync_all(api.store, api.publishing, progress)

    job, _ = api.jobs.start("sync-all", work, request.get(CALLER, "?"))
    view = job.view()
    return answer(view, status=202, headers={"Location": view.location})


@routes.get("/storage-guard/jobs/{job_id:[^/]+}", allow_head=False)
async def get_job(request: web.Request) -> web.Response:
    job_id = parse_uuid(request.match_info["job_id"], "job_id")
    job = request.app[API].jobs.get(job_id)
    if job is None:
        raise NotFound(
            f"no job {job_id} on this worker (jobs live in the memory of the worker that "
            "started them, until it stops)"
        )
    return answer(job.view())


@routes.post(SNAPSHOT_ROUTE + "/reconcile")
async def reconcile_booking(request: web.Request) -> web.Response:
    api, booking_id = request.app[API], _booking_id(request)
    return answer(await reconcile(api.store, api.publishing, booking_id), status=202)


@routes.post("/storage-guard/bookings")
async def create_booking(request: web.Request) -> web.Response:
    api = request.app[API]
    farmer_id = parse_uuid(single_query_param(request.query, "farmer_id"), "farmer_id")
    check_content_type(request.headers.get("Content-Type"))
    raw = await read_body(request.content, request.content_length, api.settings.api_max_body_bytes)
    booking = parse_json_model(BookingRequest, raw)
    row = await api.store.create_booking(farmer_id, booking, booking.id or uuid4(), clock())
    url = SNAPSHOT.format(booking_id=row["id"])
    body = BookingResponse.model_validate({"booking": row, "snapshot_url": url})
    return answer(body, status=201, headers={"Location": url})


@routes.get("/health", allow_head=False)
async def health(request: web.Request) -> web.Response:
    report = await request.app[API].health.report()
    return answer(report, status=200 if report.status == "ok" else 503, exclude_none=True)


@routes.get("/metrics", allow_head=False)
async def metrics(request: web.Request) -> web.Response:
    update_consumer_lag(request.app[API].faust_app)
    others = read_texts(request.app[API].sink_metrics())  # the worker's sink processes
    return web.Response(body=exposition(others), headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json", allow_head=False)
async def openapi_document(request: web.Request) -> web.Response:
    public = request.app[API].settings.api_metrics_public
    return web.json_response(text=json.dumps(openapi.document(metrics_public=public)))
