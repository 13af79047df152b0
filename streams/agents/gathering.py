"""The gatherer of a worker (streams.runtime.gatherer): started with the worker's tasks,
stopped before the worker shuts down, so that its consumer leaves the group at once."""

from __future__ import annotations

from typing import Any

from streams import topology
from streams.runtime import Runtime
from streams.runtime.gatherer import GathererThread


def register(rt: Runtime) -> GathererThread | None:
    if not topology.gathered_tables(rt.settings):
        return None
    gatherer = GathererThread(rt.settings)

    @rt.app.task
    async def start_gatherer() -> None:
        gatherer.start()

    async def stop_gatherer(app: Any, **kwargs: Any) -> None:
        gatherer.stop()

    rt.app.on_before_shutdown.connect(stop_gatherer)  # type: ignore[arg-type]
    return gatherer
