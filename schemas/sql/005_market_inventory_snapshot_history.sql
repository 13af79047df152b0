-- Every content change of a snapshot, as the Postgres sink wrote it: a row per
-- (booking, source_version, evaluated_at), inserted in the transaction of the upsert and only for
-- the rows the guarded upsert changed, so a replayed snapshot adds nothing.
--
-- The columns are market_inventory_snapshots' own, taken from that table rather than restated:
-- every column but the publication state, which says what MongoDB holds now, not what a version
-- was. LIKE copies names, types, collations and NOT NULL (no defaults, keys or indexes).
CREATE TABLE IF NOT EXISTS market_inventory_snapshot_history (
    LIKE market_inventory_snapshots,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (booking_id, source_version, evaluated_at)
);
ALTER TABLE market_inventory_snapshot_history
    DROP COLUMN IF EXISTS market_listing_id,
    DROP COLUMN IF EXISTS published_at,
    DROP COLUMN IF EXISTS last_synced_at,
    DROP COLUMN IF EXISTS synced_hash,
    DROP COLUMN IF EXISTS created_at,
    DROP COLUMN IF EXISTS updated_at;

-- A column added to the snapshot table later reaches a history table created before it, with
-- its type and collation; nullable, since the versions recorded before it have no value.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, co.collname
        FROM pg_attribute a
        LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
        WHERE a.attrelid = 'market_inventory_snapshots'::regclass AND a.attnum > 0
          AND NOT a.attisdropped
          AND a.attname NOT IN ('market_listing_id', 'published_at', 'last_synced_at',
                                'synced_hash', 'created_at', 'updated_at')
          AND NOT EXISTS (
              SELECT 1 FROM pg_attribute h
              WHERE h.attrelid = 'market_inventory_snapshot_history'::regclass
                AND h.attname = a.attname AND NOT h.attisdropped)
    LOOP
        EXECUTE format(
            'ALTER TABLE market_inventory_snapshot_history ADD COLUMN %I %s%s',
            c.attname, c.type,
            CASE WHEN c.collname IS NULL OR c.collname = 'default' THEN ''
                 ELSE format(' COLLATE %I', c.collname) END);
    END LOOP;
END $$;

-- The trends of a location read its history by time; the daily cleanup prunes it by time.
CREATE INDEX IF NOT EXISTS misph_location_idx
    ON market_inventory_snapshot_history (location_id, evaluated_at);
CREATE INDEX IF NOT EXISTS misph_evaluated_idx
    ON market_inventory_snapshot_history (evaluated_at);
