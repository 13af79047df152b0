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

from streams.app import app, settings
from streams.sinks.follower import sink_threads
from streams.sinks.processes import SinkProcesses

threads = sink_threads(settings) if settings.sinks_in == "thread" else None
children = (
    SinkProcesses(settings.sink_names, metrics_dir=settings.worker_data_dir)
    if settings.sinks_in == "process"
    else None
)


def metrics_files() -> list[Path]:
    """The metrics files of this worker's sink processes (none when the sinks are threads)."""
    return [] if children is None else children.metrics_files()


@app.task
async def start_sinks() -> None:
    if threads is not None:
        threads.start()
    if children is not None:
        await children.start()


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def stop_sinks(app: Any, **kwargs: Any) -> None:
    if threads is not None:
        threads.stop()
    if children is not None:
        children.stop()
