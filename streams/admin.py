"""Creating the pipeline's topics before a worker subscribes to them.

Debezium creates a table's topic only when its first change arrives, and a Kafka consumer that
subscribed before that sees the topic only at its next metadata refresh. Creating every topic up
front, with one partition count, removes both the wait and the PartitionsMismatch Faust raises
when a table's source topic and changelog disagree.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams import topology
from streams.config import Settings
from streams.errors import PipelineError

log = logging.getLogger(__name__)

LISTING_CHANGES_RETENTION_S = 7 * 24 * 3600


def pipeline_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the pipeline reads or writes (streams.topology), with its config."""
    app_id = settings.app_id
    topics: dict[str, dict[str, str]] = {
        t: {"cleanup.policy": "delete", "retention.ms": "-1"} for t in topology.cdc_topics(settings)
    }
    for name in topology.internal_topics(app_id):
        topics[name] = {}
    topics[topology.snapshot_topic(app_id)] = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(topology.SNAPSHOT_COMPACTION_LAG_MS),
    }
    # Buyer notifications (streams.changes), read by the live push and by downstream consumers.
    topics[f"{app_id}-listing-changes"] = {"retention.ms": str(LISTING_CHANGES_RETENTION_S * 1000)}
    topics[topology.dead_letter_topic(app_id)] = {
        "retention.ms": str(topology.DEAD_LETTER_RETENTION_S * 1000)
    }
    # Faust creates a table's changelog while it starts, moments before it asks for the topic's
    # partitions; when the broker's metadata does not list the new topic yet, the consumer keeps
    # "0 partitions" until its next metadata refresh (5 minutes) and every write to the table
    # raises PartitionsMismatch. Created here, before the worker starts, they are known to it.
    for table in topology.TABLES:
        topics[topology.changelog_topic(app_id, table)] = {"cleanup.policy": "compact"}
    return topics


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; refuse to go on if one has another partition count."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise PipelineError(
            f"Kafka at {settings.kafka_bootstrap} is not reachable ({exc}); "
            "start the stack with `make stack-up` or set MIS_KAFKA_PORT"
        ) from exc
    wanted = pipeline_topics(settings)
    for name in sorted(set(wanted) & set(existing)):
        count = len(existing[name].partitions)
        if count != settings.partitions:
            raise PipelineError(
                f"topic {name} has {count} partitions but MIS_PARTITIONS={settings.partitions}: "
                "every topic of the pipeline needs the same count; set MIS_PARTITIONS to match"
            )
    missing = [
        NewTopic(name, num_partitions=settings.partitions, replication_factor=1, config=config)
        for name, config in wanted.items()
        if name not in existing
    ]
    if not missing:
        return []
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise PipelineError(f"could not create topic {name}: {exc}") from exc
    created = [t.topic for t in missing]
    log.info("created topics %s", ", ".join(created))
    return created


_SQL = Path(__file__).resolve().parent.parent / "schemas" / "sql"
# The pipeline's own tables: the snapshots, what MongoDB holds of them, their history and the
# listing changes not yet in Kafka.
SINK_DDL = (
    _SQL / f"003_{topology.SNAPSHOT_TABLE}.sql",
    _SQL / f"004_{topology.SYNC_TABLE}.sql",
    _SQL / "005_market_inventory_snapshot_history.sql",
    _SQL / "006_market_listing_change_outbox.sql",
)


def ensure_sink_table(settings: Settings) -> None:
    """Create or migrate the pipeline's own tables (idempotent)."""
    try:
        with (
            psycopg.connect(settings.pg_dsn, connect_timeout=10) as conn,
            conn.transaction(),
        ):
            # Workers starting together would otherwise race on CREATE OR REPLACE FUNCTION
            # ("tuple concurrently updated"): one at a time.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('mis-sink-ddl'))")
            for ddl in SINK_DDL:
                conn.execute(ddl.read_text())  # type: ignore[call-overload]
    except psycopg.OperationalError as exc:
        raise PipelineError(
            f"Postgres at {settings.pg_host}:{settings.pg_port} is not reachable ({exc}); "
            "start the stack with `make stack-up` or set MIS_PG_*"
        ) from exc
