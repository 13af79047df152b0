"""Turning raw request input into validated values, or into a 4xx that says what is wrong."""

from __future__ import annotations

import re
from typing import Any, Protocol, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from streams.api.errors import BadRequest, Invalid, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json",)
M = TypeVar("M", bound=BaseModel)
# Python's UUID() also takes braces, "urn:uuid:" and bare hex; the API takes the canonical form.
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class BodyStream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


def parse_uuid(value: str, what: str) -> UUID:
    """A UUID in its canonical 8-4-4-4-12 form, as the OpenAPI document declares it."""
    if not _UUID_TEXT.fullmatch(value):
        raise Invalid(
            f"{what} must be a UUID, got {value[:64]!r}", [{"loc": [what], "msg": "not a UUID"}]
        )
    return UUID(value)


def single_query_param(query: Any, name: str) -> str:
    """The one value of ``name`` in a query string (a MultiDict)."""
    values = query.getall(name, [])
    if not values:
        raise Invalid(f"query parameter {name} is required", [{"loc": [name], "msg": "missing"}])
    if len(values) > 1:
        raise Invalid(f"query parameter {name} is given {len(values)} times", None)
    return str(values[0])


def check_content_type(header: str | None) -> None:
    """A body is JSON; a request that names another media type is refused (415)."""
    if header is None:
        return
    mime = header.split(";", 1)[0].strip().lower()
    if mime and mime not in JSON_TYPES and not mime.endswith("+json"):
        raise UnsupportedMediaType(f"the body must be application/json, not {mime[:64]!r}")


def check_length(content_length: int | None, limit: int) -> None:
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"the body is {content_length} bytes; at most {limit} are accepted")


async def read_body(stream: BodyStream, content_length: int | None, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a longer body (announced or chunked) is refused (413)."""
    check_length(content_length, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [p if isinstance(p, int) else str(p) for p in err["loc"]], "msg": err["msg"]}
        for err in exc.errors(include_url=False)[:20]
    ]


def parse_json_model(model: type[M], raw: bytes) -> M:
    """Validate a JSON body: 400 when it is not JSON at all, 422 when it breaks a rule."""
    if not raw.strip():
        raise BadRequest("the body is empty; a JSON object is expected")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise BadRequest(f"malformed JSON: {errors[0]['msg']}") from None
        details = validation_details(exc)
        summary = "; ".join(
            f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in details[:3]
        )
        raise Invalid(f"invalid {model.__name__}: {summary}", details) from None
