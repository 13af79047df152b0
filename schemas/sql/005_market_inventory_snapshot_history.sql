-- Every content change of a snapshot, as the Postgres sink wrote it: a row per
-- (booking, source_version, evaluated_at), inserted in the transaction of the upsert and only for
-- the rows the guarded upsert changed, so a replayed snapshot adds nothing. The columns are those
-- of market_inventory_snapshots that make up a SnapshotRecord (publication state excluded).
CREATE TABLE IF NOT EXISTS market_inventory_snapshot_history (
    booking_id          uuid NOT NULL,
    source_version      varchar(32) COLLATE "C" NOT NULL,
    evaluated_at        timestamptz NOT NULL,
    content_hash        char(64) NOT NULL,
    id                  uuid NOT NULL,
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
    sensors             jsonb NOT NULL,
    sensor_summary      jsonb NOT NULL,
    pest_events         jsonb NOT NULL,
    has_pest_alerts     boolean NOT NULL,
    pest_count          integer NOT NULL,
    certificates        jsonb NOT NULL,
    is_certified        boolean NOT NULL,
    certification_types text[] NOT NULL,
    status              varchar(32) NOT NULL,
    metadata            jsonb NOT NULL,
    finished_at         timestamptz,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (booking_id, source_version, evaluated_at)
);

-- The trends of a location read its history by time.
CREATE INDEX IF NOT EXISTS misph_location_idx
    ON market_inventory_snapshot_history (location_id, evaluated_at);
