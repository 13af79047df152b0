"""The pipeline's notion of now: one injectable function, aware UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def clock() -> datetime:
    return _current()


_current: Clock = system_clock


def set_clock(fn: Clock) -> None:
    """Replace the clock (tests drive time with it)."""
    global _current
    _current = fn
