"""Consumer lag per assigned partition, for the Prometheus gauge, computed at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from streams import metrics
from streams.runtime.internals import committed_offsets

log = logging.getLogger(__name__)


def partition_lag(
    assigned: Iterable[Any],
    highwater: Mapping[Any, int | None],
    committed: Mapping[Any, int | None],
) -> dict[tuple[str, int], int]:
    """Messages behind per (topic, partition): the log end minus the next offset to commit.

    A partition whose end or committed offset is not known yet (no fetch, no commit) is left
    out rather than reported as zero.
    """
    lag: dict[tuple[str, int], int] = {}
    for tp in assigned:
        end, done = highwater.get(tp), committed.get(tp)
        if end is None or done is None:
            continue
        lag[(tp.topic, tp.partition)] = max(0, end - done)
    return lag


def update_consumer_lag(app: Any) -> None:
    try:
        consumer = app.consumer
        assigned = sorted(consumer.assignment())
        highwater = {tp: consumer.highwater(tp) for tp in assigned}
        committed = committed_offsets(consumer)
    except Exception as exc:  # the consumer is not started, or is rebalancing
        log.debug("consumer lag unavailable: %s", exc)
        metrics.CONSUMER_LAG.clear()
        return
    metrics.CONSUMER_LAG.clear()
    for (topic, partition), behind in partition_lag(assigned, highwater, committed).items():
        metrics.CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(behind)
