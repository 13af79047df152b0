"""streams.retry.retrying and streams.agents.waker.Waker, without a broker or a database."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from streams import retry
from streams.agents.waker import Waker
from streams.clock import clock
from streams.errors import SinkUnavailable


def test_retrying_backs_off_while_unavailable_up_to_its_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    calls = iter([SinkUnavailable("down")] * 6 + ["written"])

    async def write() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = asyncio.run(retry.retrying("sink", write, max_delay=1.0, first_delay=0.2))
    assert result == "written"
    assert slept == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_retrying_does_not_retry_a_defect() -> None:
    calls = 0

    async def write() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        asyncio.run(retry.retrying("sink", write, max_delay=1.0))
    assert calls == 1


class Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[int, float]] = []

    async def send(self, *, key: Any, value: bytes, partition: int) -> None:
        self.sent.append((partition, asyncio.get_running_loop().time()))


def test_the_waker_ticks_a_partition_once_at_its_earliest_due_time() -> None:
    async def scenario() -> list[tuple[int, float]]:
        topic, loop = Topic(), asyncio.get_running_loop()
        waker = Waker(topic, b"tick")
        start = loop.time()
        now = clock()
        waker.wake(0, now + timedelta(milliseconds=200))
        waker.wake(0, now + timedelta(milliseconds=50))  # earlier: supersedes
        waker.wake(0, now + timedelta(milliseconds=300))  # later: dropped while one is armed
        waker.wake(1, now + timedelta(milliseconds=100))
        deadline = loop.time() + 5
        while len(topic.sent) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the superseded and dropped wake-ups would have fired by now
        return [(p, at - start) for p, at in topic.sent]

    sent = asyncio.run(scenario())
    # Partition 0 once (at the earliest time asked, before partition 1's), partition 1 once.
    assert [p for p, _ in sent] == [0, 1]
    assert sent[0][1] >= 0.04 and sent[1][1] >= 0.09


class FailingTopic:
    def __init__(self, stopping: bool) -> None:
        self.app = type("App", (), {"should_stop": stopping})()

    async def send(self, *, key: Any, value: bytes, partition: int) -> None:
        raise RuntimeError("producer stopped")


@pytest.mark.parametrize("stopping", [True, False])
def test_a_tick_lost_while_the_worker_stops_is_not_an_error(
    stopping: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        waker = Waker(FailingTopic(stopping), b"tick")
        await waker._send(3)

    with caplog.at_level(logging.INFO, logger="streams.agents.waker"):
        asyncio.run(scenario())
    (record,) = [r for r in caplog.records if "wake-up tick not sent" in r.message]
    assert record.levelno == (logging.INFO if stopping else logging.ERROR)
