"""One frozen Settings object, read from MIS_* environment variables, built once and passed down."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote_plus

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.topology import SINK_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIS_", frozen=True, extra="ignore")

    # --- where the local stack keeps its state and its downloads
    state_dir: Path = REPO_ROOT / ".stack"
    cache_dir: Path = Path.home() / ".cache" / "market-snapshots"

    # --- Postgres (Storage Guard's database; also holds market_inventory_snapshots)
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_user: str = "postgres"
    pg_password: SecretStr = SecretStr("postgres")
    pg_database: str = "storage_guard"

    # --- Kafka (KRaft, one combined node) and Kafka Connect. The hosts are loopback for the local
    # stack; in docker-compose.yml they are the services' names (kafka, connect, mongo).
    kafka_host: str = "127.0.0.1"
    kafka_port: int = 59092
    kafka_controller_port: int = 59093
    kafka_heap: str = "512m"
    connect_host: str = "127.0.0.1"
    connect_port: int = 58083
    connect_heap: str = "768m"
    connect_group: str = "mis-connect"

    # --- MongoDB wire server (Market Connect listings)
    mongo_host: str = "127.0.0.1"
    mongo_port: int = 57017
    mongo_database: str = "market_connect"
    mongo_collection: str = "market_listings"
    # Unset for the local stack's FerretDB; set both for a MongoDB that requires authentication.
    mongo_user: str | None = None
    mongo_password: SecretStr | None = None

    # --- the pipeline
    app_id: str = "market-snapshots"
    topic_prefix: str = "sg"
    partitions: int = Field(default=4, ge=1)
    # The worker's HTTP server listens here; 0.0.0.0 in a container so a published port reaches it.
    web_host: str = "127.0.0.1"
    web_port: int = 56066
    # Each worker on one machine needs its own RocksDB directory (RocksDB locks it).
    data_dir: Path | None = None
    store: str = "rocksdb://"
    # RocksDB keeps one database per table and partition (six tables x MIS_PARTITIONS). They
    # share one block cache and one memtable budget per worker (streams.runtime.store), in MiB;
    # each memtable is flushed at MIS_ROCKSDB_WRITE_BUFFER_MB, or earlier when all of them
    # together pass MIS_ROCKSDB_MEMTABLES_MB.
    rocksdb_write_buffer_mb: int = Field(default=4, ge=1)
    rocksdb_block_cache_mb: int = Field(default=16, ge=1)
    rocksdb_memtables_mb: int = Field(default=24, ge=1)
    # glibc's malloc: the most arenas a worker or sink process uses (0: glibc's default, eight
    # per core), how often it hands freed memory back to the system (0: never), and the size
    # from which a block is mapped on its own instead of taken from a heap (0: glibc's own,
    # which rises with the blocks freed); see streams.runtime.memory.
    # The C allocator of a worker and its sink processes: jemalloc if installed (auto), or
    # always (jemalloc: refuse to start without it), or glibc's, tuned by the three below.
    allocator: Literal["auto", "jemalloc", "glibc"] = "auto"
    malloc_arenas: int = Field(default=2, ge=0)
    malloc_trim_s: float = Field(default=30.0, ge=0)
    malloc_mmap_threshold_kb: int = Field(default=256, ge=0)
    log_level: Literal["debug", "info", "warn", "warning", "error", "critical"] = "info"
    auto_publish: bool = True
    # How long the group waits for a silent worker before handing its partitions to the others.
    session_timeout_s: float = Field(default=15.0, ge=6)
    tick_interval_s: float = Field(default=5.0, gt=0)
    # A stream partition with messages past its committed offset whose committed and read
    # offsets did not move for this long is read again from its commit (streams.runtime.stalls);
    # 0: never. Longer than any batch's wait in a storm, so that a busy partition is not taken
    # for a stalled one.
    stall_after_s: float = Field(default=60.0, ge=0)
    # Agents take up to batch_size events at a time, waiting at most batch_within_s for more.
    # Every key a batch touches is written once per batch (a changelog message each): longer
    # batches cost up to that much delay per hop at a low rate, and save most of the writes of
    # a storm (at 1,000 readings/s x 15 bookings a location, 0.01 s left the snapshots 36 s
    # behind where 0.1 s leaves them 3 s behind on the same machine).
    batch_size: int = Field(default=500, ge=1)
    batch_within_s: float = Field(default=0.1, gt=0)
    # Debezium's reading topic is read by a consumer of each worker's own (streams.runtime.
    # gatherer) that sends the location agent one message per location per read instead of
    # one per reading (streams.gather). It reads for up to gather_window_s after the first
    # event of a read. Off: the location agent reads the topic itself, an event at a time.
    gather_readings: bool = True
    gather_window_s: float = Field(default=0.1, gt=0)
    # A gatherer stops reading a partition while the location agent has more than this many of
    # the partition's messages on the location topic still to take (streams.gather.held_back).
    gather_ahead: int = Field(default=1000, ge=1)
    # Which sinks a worker runs (each following the snapshot topic with a consumer group of its
    # own); "" for none, when `mis sink` runs them elsewhere. Each sink is a child process of
    # the worker ("process") or a thread of it ("thread").
    sinks: str = "postgres,mongodb"
    sinks_in: Literal["process", "thread"] = "process"
    # A sink takes up to sink_batch_size snapshot messages at once; while its batches come back
    # full (it is behind) each may be twice the last, up to sink_batch_max.
    sink_batch_size: int = Field(default=500, ge=1)
    sink_batch_max: int = Field(default=20_000, ge=1)
    sink_batch_within_s: float = Field(default=0.05, gt=0)
    sink_retry_max_s: float = Field(default=30.0, gt=0)
    # A key that changes often sends at most one message per window with its newest content
    # (a location answering its subscribers, a booking emitting its snapshot; streams.conflate).
    conflate_window_s: float = Field(default=0.25, ge=0)
    # While a worker is behind (its agents' oldest messages waited longer than a batch normally
    # does) the window widens to that wait, up to this (streams.pace): the work of a storm then
    # shrinks until the worker catches up, and the window narrows back. At or under
    # conflate_window_s: the window never widens.
    conflate_max_window_s: float = Field(default=2.0, ge=0)
    # In a backlog of minutes (a bulk load, a restart after a long stop) the window grows past
    # conflate_max_window_s to a tenth of the wait, up to this; at or under
    # conflate_max_window_s: never wider than that.
    conflate_backlog_window_s: float = Field(default=30.0, ge=0)
    # A key's state names its last send until Kafka confirmed it (streams.agents.batch). The
    # confirmation is stored with the key's next write, or with a write of its own by the next
    # batch of its partition at least two conflation windows after the delivery
    # (streams.pace.Pace.confirm_after), and at least this long. Longer saves writes under
    # load, but a worker stopped within that time leaves its last sends unconfirmed, and the
    # next one repeats them (duplicates the receivers ignore).
    confirm_after_s: float = Field(default=0.0, ge=0)
    # A change that would make a key's part (or its stored state, twice as much) larger than
    # this goes to the dead letters instead: the producer refuses messages over 1 MB, and a key
    # whose part or changelog entry cannot be sent would stop answering altogether.
    max_part_bytes: int = Field(default=450_000, ge=1024)
    reading_history_per_sensor: int = Field(default=16, ge=1)
    # The parsed states of this many location, vendor and inspection keys (each key space its
    # own) are kept between batches, so that a key written by one batch is not parsed again by
    # the next (streams.agents.batch.Parsed); a location's is about 160 KiB in memory. 0: none.
    state_cache_keys: int = Field(default=128, ge=0)
    # The same for the bookings: a storm evaluates every booking of its locations once per
    # window, and a booking's state is a few KiB in memory. 0: none.
    booking_cache_keys: int = Field(default=2048, ge=0)
    cleanup_after_days: int = Field(default=90, ge=1)
    # A booking that asked for a part and got no answer within this long asks again.
    ask_again_after_s: float = Field(default=30.0, gt=0)
    # The daily cleanup deletes history versions evaluated longer ago than this (0: never); a
    # booking's current version stays whatever its age.
    history_keep_days: int = Field(default=180, ge=0)
    # A listing change event "quality_dropped" is emitted when quality_score falls by this much.
    quality_drop_notify: float = Field(default=5.0, gt=0)
    # Whether a process running the Postgres sink also runs the listing-change outbox's
    # publisher (streams.sinks.outbox). Off, its events wait in the outbox for another's.
    change_publisher: bool = True

    # --- the HTTP API each worker serves (streams.web)
    connector_name: str = "storage_guard-source"
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # A request waits this long for Postgres, MongoDB or Kafka before answering 503.
    api_timeout_s: float = Field(default=10.0, gt=0)
    # Bearer tokens the API accepts, as "name:sha256-hex:scope,scope" entries separated by
    # whitespace (`mis token create` prints one), here and/or one per line in api_tokens_file.
    # None configured: every endpoint but /health answers 401.
    api_tokens: SecretStr = SecretStr("")
    api_tokens_file: Path | None = None
    # /metrics without a token (for a scraper on a trusted network); else it needs `metrics`.
    api_metrics_public: bool = False
    # Each token's write requests (POST) refill at this rate, up to this many at once; past it 429.
    api_write_rate_per_s: float = Field(default=5.0, gt=0)
    api_write_burst: int = Field(default=20, ge=1)

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://{self.connect_host}:{self.connect_port}"

    @property
    def mongo_url(self) -> str:
        credentials = ""
        if self.mongo_user is not None and self.mongo_password is not None:
            user, password = self.mongo_user, self.mongo_password.get_secret_value()
            credentials = f"{quote_plus(user)}:{quote_plus(password)}@"
        return f"mongodb://{credentials}{self.mongo_host}:{self.mongo_port}/"

    @property
    def pg_dsn(self) -> str:
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"password={self.pg_password.get_secret_value()} dbname={self.pg_database}"
        )

    @property
    def worker_data_dir(self) -> Path:
        return self.data_dir or self.state_dir / f"worker-{self.web_port}"

    @property
    def sink_names(self) -> tuple[str, ...]:
        names = tuple(n.strip() for n in self.sinks.split(",") if n.strip())
        unknown = set(names) - set(SINK_NAMES)
        if unknown:
            raise ValueError(f"MIS_SINKS: unknown sink(s) {', '.join(sorted(unknown))}")
        return names

    def cdc_topic(self, table: str) -> str:
        return f"{self.topic_prefix}.public.{table}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
