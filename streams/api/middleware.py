"""One place where every answer of the web server becomes JSON, timed and counted.

Whatever a request contains, it gets a 4xx with a message or a real answer: the guard decides
first who may send it (401, 403, 429 as RFC 9457 problem details), errors raised on purpose
carry their status (streams.api.errors), aiohttp's own (unknown path, wrong method) are
rendered as JSON too, and a dependency that does not answer in time gives 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streams import metrics
from streams.api.errors import ApiError, Problem
from streams.api.requests import check_length
from streams.config import Settings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, details: list[dict[str, Any]] | None = None, **kwargs: Any
) -> web.Response:
    body: dict[str, Any] = {"success": False, "error": message}
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=status, **kwargs)


PROBLEM_JSON = "application/problem+json"
STREAMING_ROUTES = frozenset({"/storage-guard/listing-changes/stream"})


def problem_response(exc: Problem) -> web.Response:
    """RFC 9457 problem details; ``success`` and ``error`` as in every other error answer."""
    body = {
        "type": "about:blank",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.message,
        "success": False,
        "error": exc.message,
    }
    return web.json_response(
        body, status=exc.status, content_type=PROBLEM_JSON, headers=exc.headers
    )


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no such path, wrong method, body too large) as JSON."""
    if isinstance(exc, web.HTTPNotFound):
        return error_response(404, f"no such path: {request.path[:200]}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            f"{request.method} is not allowed on {request.path[:200]}; allowed: {allowed}",
            headers={"Allow": allowed},
        )
    return error_response(exc.status, exc.reason)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def api_middleware(settings: Settings, guard: Callable[[web.Request], None]) -> Any:
    """``guard`` decides who may send the request (streams.api.auth), before anything else."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse
        try:
            guard(request)
            # An announced oversized body is refused before anything reads it, on any route.
            check_length(request.content_length, settings.api_max_body_bytes)
            # A stream lasts as long as its client: only its start is bounded (by Kafka's).
            streaming = _route(request) in STREAMING_ROUTES
            async with asyncio.timeout(None if streaming else settings.api_timeout_s):
                response = await handler(request)
        except Problem as exc:
            response = problem_response(exc)
        except ApiError as exc:
            response = error_response(exc.status, exc.message, exc.details)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(request, exc)
        except TimeoutError:
            response = error_response(
                503, f"no answer from a dependency within {settings.api_timeout_s:.0f}s; retry"
            )
        except Exception:
            log.exception("request failed method=%s path=%s", request.method, request.path)
            response = error_response(500, "internal error; the worker's log has the details")
        route = _route(request)
        metrics.HTTP_REQUESTS.labels(
            route=route, method=request.method, status=str(response.status)
        ).inc()
        metrics.HTTP_LATENCY.labels(route=route).observe(time.perf_counter() - started)
        if response.status >= 500:
            log.warning(
                "answered status=%d method=%s path=%s after=%.2fs body=%s",
                response.status,
                request.method,
                request.path,
                time.perf_counter() - started,
                _body(response),
            )
        return response

    return middleware


def _body(response: web.StreamResponse) -> str:
    """The start of an answer's JSON body, for the log."""
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes | bytearray):
        return body[:300].decode("utf-8", "replace")
    return "-"
