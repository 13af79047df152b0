"""The Faust application, built from Settings (streams.runtime.build adds its agents)."""

from __future__ import annotations

from typing import Any

import faust
from faust.sensors.monitor import Monitor

from streams.config import Settings
from streams.runtime import faustfix, store


class LeanMonitor(Monitor):
    """Faust's monitor without its per-message bookkeeping.

    Faust calls its monitor for every message in and out, every event of a stream, every table
    read and write and every send: counters, timings and deques that only its own web pages
    show, and those are off (the pipeline's metrics are streams.metrics). What Faust itself
    reads back is kept: when a stream last took an event of a partition (its stalled-stream
    warnings), the partitions' end offsets and the committed ones."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = self.time()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_table_del(self, table: Any, key: Any) -> None:
        pass

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        pass

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass


def create_app(settings: Settings) -> faust.App:
    faustfix.apply()
    store.install()
    return faust.App(
        settings.app_id,
        monitor=LeanMonitor(),
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_client_id=settings.app_id,
        store=settings.store,
        datadir=str(settings.worker_data_dir),
        # One partition count for every topic of the pipeline: Faust refuses a table whose
        # changelog and source topic disagree (PartitionsMismatch).
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Waiting 5 ms for a batch to fill costs little delay and saves about a third of a busy
        # worker's CPU (and most of the broker's) against sending every message on its own.
        producer_linger=0.005,
        # aiokafka fills one batch per partition and, when a message does not fit, waits for
        # that batch to reach the broker; Faust sends every table write through one queue, so
        # with the default 16 kB a burst of state writes advanced one broker round trip at a
        # time and held the consumer behind it. Batches up to 512 kB (under the broker's 1 MB)
        # carry a burst's changelog in a few requests.
        producer_max_batch_size=512 * 1024,
        # The tables' changelogs carry whole states (a location's is tens of kB of JSON) once
        # per batch: compressed, the broker stores and serves a fraction of the bytes. Snappy:
        # aiokafka compresses lz4 at level 9 (57 MB/s of state JSON on the 2-core machine,
        # in the event loop; snappy 336 MB/s at a ratio of 3.6 against 4.5), and a burst's
        # changelog waited on it.
        producer_compression_type="snappy",
        # What a worker holds of its input before the agents take it, in a backlog when every
        # partition has more: at most 1,024 messages waiting per stream (Faust's default is
        # 4,096), of up to tens of kB each (a location's gathered readings, a part); the agents
        # take 500 at a time. Fetches keep Faust's size (1 MiB a partition): at 256 kB (and
        # 4 MiB a fetch) the 100k load wrote 44,000 rows in 900 s instead of 100,000, its
        # batches smaller and each key written more often (docs/bench/load-20261204T032402Z.txt).
        stream_buffer_maxsize=1024,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        # Faust's own pages would show the join tables' contents and the topology to anyone
        # who can reach the port; the API (streams.web) is what the workers serve.
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_router_enabled=False,
        # Agents, timers and the API are registered by streams.runtime.build, not discovered.
        autodiscover=False,
        table_cleanup_interval=60.0,
    )
