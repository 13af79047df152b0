"""The sinks, in threads of the worker: each follows the snapshot topic with its own group.

They run beside the agents rather than as one: a Faust agent shares the worker's consumer, so
a sink that stalls would stall the others' streams (see streams.sinks.follower).
"""

from __future__ import annotations

from typing import Any

from streams.app import app, settings
from streams.sinks.follower import sink_threads

threads = sink_threads(settings)


@app.task
async def start_sinks() -> None:
    threads.start()


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def stop_sinks(app: Any, **kwargs: Any) -> None:
    threads.stop()
