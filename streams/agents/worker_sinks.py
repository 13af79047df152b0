"""The sinks of a worker: each follows the snapshot topic with a consumer group of its own.

They run beside the agents rather than as one: a Faust agent shares the worker's consumer, so
a sink that stalls would stall the others' streams (see streams.sinks.follower). By default
each is a child process of the worker (``MIS_SINKS_IN=process``, streams.sinks.processes), so
that the sinks and the join do not take turns on one interpreter lock; ``thread`` runs them in
threads of the worker instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.runtime import Runtime
from streams.sinks.follower import sink_threads
from streams.sinks.processes import SinkProcesses


class WorkerSinks:
    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        self.threads = sink_threads(s) if s.sinks_in == "thread" else None
        self.children = (
            SinkProcesses(s.sink_names, metrics_dir=s.worker_data_dir)
            if s.sinks_in == "process"
            else None
        )

    def metrics_files(self) -> list[Path]:
        """The metrics files of this worker's sink processes (none when the sinks are
        threads)."""
        return [] if self.children is None else self.children.metrics_files()

    async def start(self) -> None:
        if self.threads is not None:
            self.threads.start()
        if self.children is not None:
            await self.children.start()

    def stop(self) -> None:
        if self.threads is not None:
            self.threads.stop()
        if self.children is not None:
            self.children.stop()


def register(rt: Runtime) -> WorkerSinks:
    sinks = WorkerSinks(rt)

    @rt.app.task
    async def start_sinks() -> None:
        await sinks.start()

    async def stop_sinks(app: Any, **kwargs: Any) -> None:
        sinks.stop()

    rt.app.on_before_shutdown.connect(stop_sinks)  # type: ignore[arg-type]
    return sinks
