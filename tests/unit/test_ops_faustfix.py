"""streams.faustfix: after a table recovery, stream partitions are seeked before they resume."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.recovery import Recovery

from streams import faustfix
from streams.app import app  # noqa: F401  (building the app installs the fix)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in ("perform_seek", "send", "maybe_start"):
                return asyncio.sleep(0)
            if name == "assignment":
                return {"stream-tp", "changelog-tp"}
            if name == "assigned_standbys":
                return []
            return None

        return call


class _FakeRecovery:
    def __init__(self) -> None:
        self.consumer = _Recorder()
        self.tables = _Recorder()
        self.tables.values = lambda: []  # type: ignore[attr-defined]
        self.completed = _Recorder()
        self.log = _Recorder()
        self.app = type(
            "App",
            (),
            {
                "consumer": self.consumer,
                "consumer_generation_id": 7,
                "on_rebalance_complete": _Recorder(),
                "flow_control": _Recorder(),
                "_fetcher": _Recorder(),
                "assignor": _Recorder(),
                "on_rebalance_end": lambda self: None,
                "conf": type("Conf", (), {"broker_request_timeout": 1.0})(),
            },
        )()
        self.actives_for_table: dict[Any, Any] = {}
        self.standbys_for_table: dict[Any, Any] = {}

    def _set_recovery_ended(self) -> None:
        pass

    def _is_changelog_tp(self, tp: str) -> bool:
        return tp.startswith("changelog")

    async def _wait(self, coro: Any, timeout: float | None = None) -> None:
        await coro


def test_the_fix_is_installed() -> None:
    assert Recovery.on_recovery_completed is faustfix._on_recovery_completed


def test_stream_partitions_are_seeked_to_committed_offsets_before_they_resume() -> None:
    recovery = _FakeRecovery()
    asyncio.run(faustfix._on_recovery_completed(recovery, generation_id=7))
    calls = recovery.consumer.calls
    assert (
        calls.index("perform_seek") < calls.index("resume_partitions") < calls.index("resume_flow")
    )
