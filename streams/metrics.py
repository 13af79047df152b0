"""Prometheus metrics of the pipeline."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("mis_events_in_total", "Messages consumed", ["topic"])
EVENTS_OUT = Counter("mis_events_out_total", "Messages produced", ["topic"])
DEAD_LETTERS = Counter(
    "mis_dead_letters_total", "Messages sent to the dead-letter topic", ["topic"]
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
HTTP_REQUESTS = Counter(
    "mis_http_requests_total", "HTTP requests answered by the API", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram("mis_http_request_seconds", "Time to answer an HTTP request", ["route"])
