-- Debezium's signalling table: an INSERT here asks the connector for an incremental snapshot
-- (ad-hoc backfill) of chosen tables or rows. The connector reads it through the WAL, so the
-- table must be in the publication (connectors/storage_guard-source.json lists it).
CREATE TABLE IF NOT EXISTS debezium_signal (
    id   varchar(64) PRIMARY KEY,
    type varchar(32) NOT NULL,
    data varchar(4096)
);
