-- The pipeline's own output table: one row per booking, upserted idempotently by the sink.
CREATE TABLE IF NOT EXISTS market_inventory_snapshots (
    id                  uuid PRIMARY KEY,
    booking_id          uuid NOT NULL UNIQUE,
    farmer_id           uuid NOT NULL,
    vendor_id           uuid NOT NULL,
    location_id         uuid NOT NULL,
    crop_type           varchar(120) NOT NULL,
    grade               varchar(16),
    quantity_kg         integer NOT NULL,
    start_date          timestamptz,
    end_date            timestamptz,
    duration_days       integer,
    inspection_id       uuid,
    inspection_status   varchar(32),
    quality_score       numeric(5,2),
    freshness           varchar(32),
    visual_defects      text,
    shelf_life_days     integer,
    sensors             jsonb NOT NULL DEFAULT '{}'::jsonb,
    sensor_summary      jsonb NOT NULL DEFAULT '{}'::jsonb,
    pest_events         jsonb NOT NULL DEFAULT '[]'::jsonb,
    has_pest_alerts     boolean NOT NULL DEFAULT false,
    pest_count          integer NOT NULL DEFAULT 0,
    certificates        jsonb NOT NULL DEFAULT '[]'::jsonb,
    is_certified        boolean NOT NULL DEFAULT false,
    certification_types text[] NOT NULL DEFAULT '{}',
    status              varchar(32) NOT NULL,
    market_listing_id   varchar(64),
    published_at        timestamptz,
    last_synced_at      timestamptz,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    finished_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- The idempotency guard. source_version is the greatest Debezium (commit LSN, LSN) pair that
    -- contributed to the snapshot, hex-encoded so that text order is numeric order; it survives a
    -- rebuild from the earliest offsets. evaluated_at orders snapshots that differ only through the
    -- passage of time (a pest event ageing out). content_hash makes a repeated snapshot a no-op.
    source_version      varchar(32) COLLATE "C" NOT NULL,
    evaluated_at        timestamptz NOT NULL,
    content_hash        char(64) NOT NULL,
    -- The content_hash last written to MongoDB: a row whose synced_hash differs is not yet
    -- (re)published, which survives a crash between the two writes.
    synced_hash         char(64)
);
ALTER TABLE market_inventory_snapshots ADD COLUMN IF NOT EXISTS synced_hash char(64);
ALTER TABLE market_inventory_snapshots ADD COLUMN IF NOT EXISTS finished_at timestamptz;

CREATE INDEX IF NOT EXISTS mis_farmer_idx ON market_inventory_snapshots (farmer_id);
CREATE INDEX IF NOT EXISTS mis_location_idx ON market_inventory_snapshots (location_id);
CREATE INDEX IF NOT EXISTS mis_status_idx ON market_inventory_snapshots (status);
CREATE INDEX IF NOT EXISTS mis_created_idx ON market_inventory_snapshots (created_at);
DROP INDEX IF EXISTS mis_cleanup_idx;
CREATE INDEX IF NOT EXISTS mis_finished_idx ON market_inventory_snapshots (finished_at)
    WHERE status IN ('completed', 'withdrawn');
