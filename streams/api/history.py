"""The history endpoint's cursor and rows, and the trends endpoint's ``since``."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from streams.api.errors import Invalid
from streams.sinks.records import snapshot_fields

HISTORY_EXTRA = ("source_version", "evaluated_at", "content_hash", "recorded_at")


def encode_cursor(source_version: str, evaluated_at: datetime) -> str:
    text = f"{source_version}|{evaluated_at.astimezone(UTC).isoformat()}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, datetime]:
    """(source_version, evaluated_at) of the last entry of the previous page."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        source_version, at = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        evaluated_at = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise Invalid(
            "before must be a next_before an earlier page answered",
            [{"loc": ["before"], "msg": "not a history cursor"}],
        ) from exc
    if evaluated_at.tzinfo is None:
        raise Invalid("before is not a history cursor", [{"loc": ["before"], "msg": "no zone"}])
    return source_version, evaluated_at


def parse_since(raw: str) -> datetime:
    """An ISO 8601 time with a zone (``Z`` accepted)."""
    try:
        since = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError as exc:
        raise Invalid(
            f"since must be an ISO 8601 time, got {raw[:40]!r}",
            [{"loc": ["since"], "msg": "not an ISO 8601 time"}],
        ) from exc
    if since.tzinfo is None:
        raise Invalid("since needs a time zone", [{"loc": ["since"], "msg": "no time zone"}])
    return since


def entry_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {**snapshot_fields(row), **{k: row[k] for k in HISTORY_EXTRA}}
