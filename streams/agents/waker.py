"""Waking a partition when its conflation window ends.

Faust writes tables only inside stream processing, so a pending key cannot be flushed from a
timer: the worker sends a tick into the partition instead, at the time its earliest pending key
is due, and the agent flushes the due keys when the tick comes through (or earlier, when any
batch of that partition does). One timer per partition; a later wake-up request is dropped while
an earlier one is scheduled. The leader's periodic tick (streams.agents.timers) is the fallback
that finds what a restarted worker left pending.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from streams.clock import clock

log = logging.getLogger(__name__)


class Waker:
    def __init__(self, topic: Any, tick: bytes) -> None:
        self._topic, self._tick = topic, tick
        self._at: dict[int, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def wake(self, partition: int, due: datetime) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = now + max(0.0, (due - clock()).total_seconds())
        scheduled = self._at.get(partition)
        if scheduled is not None and now <= scheduled <= at:
            return
        self._at[partition] = at
        loop.call_at(at, self._fire, partition, at)

    def _fire(self, partition: int, at: float) -> None:
        if self._at.get(partition) != at:
            return  # superseded by an earlier wake-up, which has re-armed what is left
        del self._at[partition]
        task = asyncio.ensure_future(self._send(partition))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, partition: int) -> None:
        try:
            await self._topic.send(key=None, value=self._tick, partition=partition)
        except Exception as exc:
            if getattr(getattr(self._topic, "app", None), "should_stop", False):
                # The worker is stopping: the next owner's ticks find what is pending.
                log.info("wake-up tick not sent while stopping partition=%s: %s", partition, exc)
                return
            log.exception("wake-up tick not sent partition=%s", partition)
