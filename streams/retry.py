"""Retrying an awaitable while what it needs is unavailable, with capped exponential backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from streams import metrics
from streams.errors import SinkUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


async def retrying(
    what: str, fn: Callable[[], Awaitable[T]], *, max_delay: float, first_delay: float = 0.2
) -> T:
    """Call ``fn`` until it does not raise SinkUnavailable, backing off up to ``max_delay``."""
    delay = first_delay
    while True:
        try:
            return await fn()
        except SinkUnavailable as exc:
            metrics.SINK_RETRIES.labels(sink=what).inc()
            log.warning("unavailable what=%s retry_in=%.1fs error=%s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
