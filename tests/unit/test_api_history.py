"""The history cursor and the trends' since: round trips and refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from streams.api.errors import Invalid
from streams.api.history import decode_cursor, encode_cursor, parse_since


@pytest.mark.parametrize(
    "version, at",
    [
        ("0" * 32, datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
        (
            "00000000019628b00000000001962918",
            datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_a_cursor_gives_back_the_entry_it_was_made_of(version: str, at: datetime) -> None:
    cursor = encode_cursor(version, at)
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor
    assert decode_cursor(cursor) == (version, at)


@pytest.mark.parametrize(
    "cursor", ["", "%%%", "bm9waXBl", encode_cursor("a", datetime(2026, 1, 1, tzinfo=UTC))[:-3]]
)
def test_a_cursor_not_made_by_the_api_is_a_422(cursor: str) -> None:
    with pytest.raises(Invalid):
        decode_cursor(cursor)


def test_since_accepts_iso_times_with_a_zone_only() -> None:
    assert parse_since("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    # A '+' in a query string that was not percent-encoded arrives as a space.
    assert parse_since("2026-12-01T10:00:00 02:00") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    for bad in ("yesterday", "2026-12-01T10:00:00", ""):
        with pytest.raises(Invalid):
            parse_since(bad)


def test_a_stream_position_gives_back_the_offsets_it_was_made_of() -> None:
    from streams.api.live import format_position, parse_position

    topic = "app-listing-changes"
    positions = {0: 12, 1: 0, 3: 7}
    text = format_position(topic, positions)
    assert text == "app-listing-changes:0:12,app-listing-changes:1:0,app-listing-changes:3:7"
    assert parse_position(topic, text) == positions


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0:12",
        "other-listing-changes:0:1",
        "app-listing-changes:-1:3",
        "app-listing-changes:0:x",
    ],
)
def test_a_position_of_another_stream_is_a_422(text: str) -> None:
    from streams.api.live import parse_position

    with pytest.raises(Invalid):
        parse_position("app-listing-changes", text)


def test_an_event_is_written_as_server_sent_event_lines() -> None:
    from streams.api.live import _sse

    assert _sse("ready", '{"a": 1}', "t:0:1") == b'event: ready\nid: t:0:1\ndata: {"a": 1}\n\n'
    assert _sse("x", "one\ntwo") == b"event: x\ndata: one\ndata: two\n\n"
