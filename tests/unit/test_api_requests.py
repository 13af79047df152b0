"""Request validation of the HTTP API, without a server: what is refused, with which status."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from multidict import MultiDict

from streams.api.errors import (
    ApiError,
    BadRequest,
    Invalid,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from streams.api.models import BookingRequest
from streams.api.requests import (
    check_content_type,
    parse_json_model,
    parse_uuid,
    read_body,
    single_query_param,
)

GOOD: dict[str, Any] = {
    "location_id": str(uuid4()),
    "vendor_id": str(uuid4()),
    "crop_type": "  maize ",
    "quantity_kg": 1200,
    "duration_days": 30,
}


def body(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_a_valid_booking_is_parsed_and_normalised() -> None:
    req = parse_json_model(
        BookingRequest,
        body(ai_inspection_id=str(uuid4()), grade="A", start_date="2026-12-01T08:00:00+02:00"),
    )
    assert req.crop_type == "maize"
    assert req.start_date == datetime(2026, 12, 1, 6, tzinfo=UTC)
    assert req.start_date is not None and req.start_date.tzinfo is UTC


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", BadRequest),
        (b"   ", BadRequest),
        (b"{not json", BadRequest),
        (b"\xff\xfe", BadRequest),
        (b"[1, 2]", Invalid),
        (b'"text"', Invalid),
        (b"null", Invalid),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(raw: bytes, error: type[ApiError]) -> None:
    with pytest.raises(error):
        parse_json_model(BookingRequest, raw)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity_kg": -5}, "quantity_kg"),
        ({"quantity_kg": 0}, "quantity_kg"),
        ({"quantity_kg": 2**31}, "quantity_kg"),
        ({"quantity_kg": "12"}, "quantity_kg"),
        ({"quantity_kg": 12.5}, "quantity_kg"),
        ({"quantity_kg": True}, "quantity_kg"),
        ({"duration_days": 0}, "duration_days"),
        ({"duration_days": 3651}, "duration_days"),
        ({"location_id": "nope"}, "location_id"),
        ({"vendor_id": 42}, "vendor_id"),
        ({"crop_type": ""}, "crop_type"),
        ({"crop_type": "   "}, "crop_type"),
        ({"crop_type": "x" * 121}, "crop_type"),
        ({"crop_type": "to\u0000mato"}, "crop_type"),
        ({"grade": "g" * 17}, "grade"),
        ({"start_date": "2026-12-01T08:00:00"}, "start_date"),
        ({"start_date": "1999-12-31T23:59:59Z"}, "start_date"),
        ({"start_date": "9999-12-31T00:00:00Z"}, "start_date"),
        ({"status": "active"}, "status"),
        ({"ai_inspection_id": "not-a-uuid"}, "ai_inspection_id"),
    ],
)
def test_a_field_that_breaks_a_rule_is_named_in_the_422(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as caught:
        parse_json_model(BookingRequest, body(**changes))
    assert caught.value.status == 422
    assert caught.value.details and caught.value.details[0]["loc"][0] == field
    assert field in caught.value.message


def test_a_missing_field_is_named() -> None:
    raw = json.dumps({k: v for k, v in GOOD.items() if k != "vendor_id"}).encode()
    with pytest.raises(Invalid, match="vendor_id"):
        parse_json_model(BookingRequest, raw)


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "",
        "{6f1c2a4e-0b7d-4c1e-9a55-3e2f8d9b1a01}",
        "urn:uuid:6f1c2a4e-0b7d-4c1e-9a55-3e2f8d9b1a01",
        "6f1c2a4e0b7d4c1e9a553e2f8d9b1a01",
        "6f1c2a4e-0b7d-4c1e-9a55-3e2f8d9b1a01\n",
    ],
)
def test_only_canonical_uuids_are_ids(text: str) -> None:
    with pytest.raises(Invalid):
        parse_uuid(text, "booking_id")


def test_a_canonical_uuid_of_either_case_is_an_id() -> None:
    u = "6F1C2A4E-0B7D-4C1E-9A55-3E2F8D9B1A01"
    assert parse_uuid(u, "booking_id") == UUID(u)


def test_query_parameter_must_be_given_exactly_once() -> None:
    assert single_query_param(MultiDict([("farmer_id", "a")]), "farmer_id") == "a"
    with pytest.raises(Invalid, match="required"):
        single_query_param(MultiDict(), "farmer_id")
    with pytest.raises(Invalid, match="2 times"):
        single_query_param(MultiDict([("farmer_id", "a"), ("farmer_id", "b")]), "farmer_id")


@pytest.mark.parametrize(
    "header",
    [None, "application/json", "application/json; charset=utf-8", "application/merge+json", ""],
)
def test_json_media_types_are_accepted(header: str | None) -> None:
    check_content_type(header)


@pytest.mark.parametrize("header", ["text/plain", "application/x-www-form-urlencoded"])
def test_other_media_types_are_refused(header: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_content_type(header)


class Chunks:
    """A request body arriving in pieces, as aiohttp's StreamReader hands it out."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    async def read(self, n: int = -1) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


def test_a_body_within_the_limit_is_read_whole() -> None:
    assert asyncio.run(read_body(Chunks(b"ab", b"cd"), 4, limit=4)) == b"abcd"


def test_an_announced_oversized_body_is_refused_unread() -> None:
    stream = Chunks(b"never read")
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(stream, 5, limit=4))
    assert stream._chunks == [b"never read"]


def test_an_unannounced_oversized_body_is_refused_once_past_the_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(Chunks(b"abc", b"de", b"f"), None, limit=4))
