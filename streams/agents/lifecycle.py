"""What a worker does once it has started."""

from __future__ import annotations

import logging

from streams.runtime import Runtime


def register(rt: Runtime) -> None:
    @rt.app.task
    async def declare_topics() -> None:
        # Nothing consumes the dead-letter topic inside the pipeline, so Faust would not create
        # it: declare it at start-up with the pipeline's partition count and retention.
        await rt.topics.dead_letters.maybe_declare()

    @rt.app.task
    async def restore_log_level() -> None:
        # At --loglevel warn and above Faust shows a start-up spinner and lowers the root logger
        # to DEBUG to feed it, so every debug call on the hot path builds a log record: about a
        # tenth of a busy worker's time. The spinner is done once tasks run.
        level = rt.settings.log_level.upper().replace("WARNING", "WARN")
        logging.getLogger().setLevel(logging.WARNING if level == "WARN" else level)
        # aiokafka logs every fetch and send at debug level and its records were still built
        # under a quieter root logger; below WARNING it only matters when debugging the client.
        if level != "DEBUG":
            logging.getLogger("aiokafka").setLevel(logging.WARNING)
