"""A token bucket per API token, for the write endpoints.

Buckets live in the worker's memory: each worker enforces the rate on the requests it answers,
so behind a balancer spreading requests over N workers a token gets up to N times the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Bucket:
    level: float
    updated: float


class RateLimiter:
    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate, self._burst, self._clock = rate_per_s, float(burst), clock
        self._buckets: dict[str, Bucket] = {}

    def take(self, key: str) -> float | None:
        """Spend one request of ``key``'s bucket: None if allowed, else seconds until one is."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(level=self._burst, updated=now)
        bucket.level = min(self._burst, bucket.level + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return None
        return (1.0 - bucket.level) / self._rate
