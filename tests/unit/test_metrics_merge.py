"""A worker's /metrics merges its sink processes' metrics into its own (streams.metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics


def _child(sink: str, writes: int, freshness: float) -> str:
    """What a sink process writes: the same families as the worker's, its own samples."""
    registry = CollectorRegistry()
    Counter("mis_sink_writes_total", "w", ["sink"], registry=registry).labels(sink=sink).inc(writes)
    Histogram("mis_sink_latency_seconds", "l", ["sink"], registry=registry).labels(
        sink=sink
    ).observe(0.2)
    Gauge("mis_snapshot_freshness_seconds", "f", ["sink"], registry=registry).labels(sink=sink).set(
        freshness
    )
    Counter("mis_snapshots_emitted_total", "s", registry=registry)  # zero in a sink process
    Counter("mis_dead_letters_total", "d", ["topic"], registry=registry).labels(topic="t").inc(2)
    return generate_latest(registry).decode()


def test_sink_processes_metrics_join_the_workers_one_family_per_name() -> None:
    metrics.DEAD_LETTERS.labels(topic="t").inc(1)
    before = metrics.SNAPSHOTS_EMITTED._value.get()
    text = metrics.exposition([_child("postgres", 5, 1.5), _child("mongodb", 3, 4.0)]).decode()

    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    by_name = {f.name: f for f in families}

    def value(family: str, sample: str, **labels: str) -> float:
        (found,) = [
            s.value
            for s in by_name[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return found

    assert value("mis_sink_writes", "mis_sink_writes_total", sink="postgres") == 5
    assert value("mis_sink_writes", "mis_sink_writes_total", sink="mongodb") == 3
    assert (
        value("mis_snapshot_freshness_seconds", "mis_snapshot_freshness_seconds", sink="mongodb")
        == 4.0
    )
    assert value("mis_sink_latency_seconds", "mis_sink_latency_seconds_count", sink="postgres") == 1
    # the worker's own counters are not counted twice, the children's are added to them
    assert value("mis_snapshots_emitted", "mis_snapshots_emitted_total") == before
    assert value("mis_dead_letters", "mis_dead_letters_total", topic="t") >= 1 + 2 + 2
