-- What MongoDB holds, per booking: written by whoever writes a listing (the MongoDB sink, the
-- publish endpoint, republish) in the transaction that serialises writers of that booking.
-- The snapshot row's publication columns follow it through triggers, so the row says only what
-- MongoDB holds whichever of the two sinks is ahead.
CREATE TABLE IF NOT EXISTS market_listing_sync (
    booking_id       uuid PRIMARY KEY,
    listing_id       varchar(64) NOT NULL,
    source_version   varchar(32) COLLATE "C" NOT NULL,
    evaluated_at     timestamptz NOT NULL,
    content_hash     char(64) NOT NULL,
    status           varchar(32) NOT NULL,
    first_synced_at  timestamptz NOT NULL,
    synced_at        timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION mis_listing_synced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE market_inventory_snapshots SET
        status = CASE WHEN status = 'ready_to_publish' THEN 'published' ELSE status END,
        market_listing_id = NEW.listing_id,
        published_at = COALESCE(published_at, NEW.first_synced_at),
        last_synced_at = NEW.synced_at,
        synced_hash = NEW.content_hash
    WHERE booking_id = NEW.booking_id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS mis_listing_synced ON market_listing_sync;
CREATE TRIGGER mis_listing_synced AFTER INSERT OR UPDATE ON market_listing_sync
    FOR EACH ROW EXECUTE FUNCTION mis_listing_synced();

-- A row inserted after its listing was written (the Postgres sink behind the MongoDB one) starts
-- out published. The upsert's EXCLUDED row carries what this trigger set.
CREATE OR REPLACE FUNCTION mis_snapshot_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s market_listing_sync%ROWTYPE;
BEGIN
    SELECT * INTO s FROM market_listing_sync WHERE booking_id = NEW.booking_id;
    IF FOUND THEN
        NEW.market_listing_id := s.listing_id;
        NEW.published_at := COALESCE(NEW.published_at, s.first_synced_at);
        NEW.last_synced_at := s.synced_at;
        NEW.synced_hash := s.content_hash;
        IF NEW.status = 'ready_to_publish' THEN
            NEW.status := 'published';
        END IF;
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS mis_snapshot_inserted ON market_inventory_snapshots;
CREATE TRIGGER mis_snapshot_inserted BEFORE INSERT ON market_inventory_snapshots
    FOR EACH ROW EXECUTE FUNCTION mis_snapshot_inserted();

-- Rows published before this table existed keep their publication: seed it from them.
INSERT INTO market_listing_sync
    (booking_id, listing_id, source_version, evaluated_at, content_hash, status,
     first_synced_at, synced_at)
SELECT booking_id, market_listing_id, source_version, evaluated_at, synced_hash, status,
       COALESCE(published_at, last_synced_at), last_synced_at
FROM market_inventory_snapshots
WHERE market_listing_id IS NOT NULL AND synced_hash IS NOT NULL AND last_synced_at IS NOT NULL
ON CONFLICT (booking_id) DO NOTHING;
