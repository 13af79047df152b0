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
