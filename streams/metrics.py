"""Prometheus metrics of the pipeline."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

EVENTS_IN = Counter("mis_events_in_total", "Messages consumed", ["topic"])
EVENTS_OUT = Counter("mis_events_out_total", "Messages produced", ["topic"])
DEAD_LETTERS = Counter(
    "mis_dead_letters_total", "Messages sent to the dead-letter topic", ["topic"]
)
INPUT_DELAY = Histogram(
    "mis_input_delay_seconds",
    "From a message's Kafka timestamp (when it was produced) to when its agent took it",
    ["topic"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONFLATE_WINDOW = Gauge(
    "mis_conflate_window_seconds",
    "The conflation window the agents use now: MIS_CONFLATE_WINDOW_S, wider while behind",
)
CONFLATE_WINDOW_WIDEST = Gauge(
    "mis_conflate_window_widest_seconds",
    "The widest conflation window the agents used since the worker started",
)
UNCONFIRMED_SENDS = Gauge(
    "mis_unconfirmed_sends",
    "Keys whose stored state does not show their last send confirmed yet; a worker stopped "
    "while this is above zero leaves those sends to be made again (duplicates, never losses)",
    ["table"],
)
SNAPSHOTS_EMITTED = Counter("mis_snapshots_emitted_total", "Snapshots whose content changed")
SINK_WRITES = Counter("mis_sink_writes_total", "Rows or documents written", ["sink"])
SINK_LATENCY = Histogram("mis_sink_latency_seconds", "Time to write one batch", ["sink"])
SINK_RETRIES = Counter("mis_sink_retries_total", "Failed sink writes that were retried", ["sink"])
SINK_FRESHNESS = Gauge(
    "mis_snapshot_freshness_seconds",
    "Age of the newest snapshot a sink wrote, at the time of writing",
    ["sink"],
)
CONSUMER_LAG = Gauge(
    "mis_consumer_lag_messages",
    "Messages between the log end and the committed offset, per assigned partition",
    ["topic", "partition"],
)
GATHER_LAG = Gauge(
    "mis_gather_lag_messages",
    "Messages between the log end and the gatherer's position, per partition it reads",
    ["topic", "partition"],
)
PARTITION_STALLS = Counter(
    "mis_partition_stalls_total",
    "Stream partitions found with messages past their commit and no progress for "
    "MIS_STALL_AFTER_S, and read again from their committed offset (streams.runtime.stalls)",
    ["topic"],
)
HTTP_REQUESTS = Counter(
    "mis_http_requests_total", "HTTP requests answered by the API", ["route", "method", "status"]
)
LOOP_HELD = Histogram(
    "mis_event_loop_held_seconds",
    "How late the worker's event loop woke a 0.25 s sleep: the time a callback held it",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
HTTP_LATENCY = Histogram("mis_http_request_seconds", "Time to answer an HTTP request", ["route"])


@functools.cache
def of_topic(metric: Any, topic: str) -> Any:
    """``metric.labels(topic=topic)``, looked up once (a label lookup takes a lock)."""
    return metric.labels(topic=topic)


# --- metrics of other processes (a worker's sink processes, streams.sinks.processes)


def exposition(others: Iterable[str] = ()) -> bytes:
    """This process's metrics in Prometheus's text format, with those of ``others`` (texts in
    the same format, written by child processes) merged in: one family per name. Counters and
    histograms of the same name and labels are added up; a gauge keeps this process's value
    where it has one, else the first other's; ``_created`` series of the others are left out."""
    families: dict[str, Metric] = {}
    for family in REGISTRY.collect():
        families[family.name] = family
    for text in others:
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created"):
                continue  # when the other process's series began: not this process's to say
            mine = families.get(family.name)
            if mine is None:
                mine = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
            index = {
                (s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(mine.samples)
            }
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                at = index.get((sample.name, tuple(sorted(sample.labels.items()))))
                if at is None:
                    index[(sample.name, tuple(sorted(sample.labels.items())))] = len(mine.samples)
                    mine.samples.append(sample)
                elif family.type in ("counter", "histogram", "summary"):
                    held = mine.samples[at]
                    mine.samples[at] = held._replace(value=held.value + sample.value)
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Fixed(list(families.values())))
    return generate_latest(merged)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def read_texts(paths: Iterable[Path]) -> list[str]:
    """The metrics files of the child processes that have written one."""
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    return texts


def write_file(path: Path) -> None:
    """Write this process's metrics to ``path``, whole or not at all."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(generate_latest(REGISTRY))
    os.replace(tmp, path)
