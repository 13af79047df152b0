"""Errors the API answers with; each carries its HTTP status and a message for the client."""

from __future__ import annotations

from typing import Any

from streams.errors import PipelineError


class ApiError(PipelineError):
    """A request the API answers with ``{"success": false, "error": message}``."""

    status = 400

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class Invalid(ApiError):
    """Well-formed input that breaks a rule: wrong type, out of range, unknown reference."""

    status = 422


class Unavailable(ApiError):
    """A dependency (Postgres, MongoDB, Kafka) did not answer in time; the client may retry."""

    status = 503


class Problem(ApiError):
    """A refusal answered as application/problem+json (RFC 9457), with headers of its own."""

    title = "Bad Request"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class Unauthorized(Problem):
    """No token, or one that no configured entry matches."""

    status = 401
    title = "Unauthorized"


class Forbidden(Problem):
    """A valid token without the scope the operation needs."""

    status = 403
    title = "Forbidden"


class TooManyRequests(Problem):
    """The token's write rate is spent; Retry-After says when the next request is accepted."""

    status = 429
    title = "Too Many Requests"
