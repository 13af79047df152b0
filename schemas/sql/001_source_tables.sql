-- Storage Guard's source tables. Names and types are the contract with the applications that
-- write them; this pipeline only reads their changes. Every statement is idempotent.

CREATE TABLE IF NOT EXISTS storage_bookings (
    id               uuid PRIMARY KEY,
    farmer_id        uuid NOT NULL,
    vendor_id        uuid NOT NULL,
    location_id      uuid NOT NULL,
    crop_type        varchar(120) NOT NULL,
    grade            varchar(16),
    quantity_kg      integer NOT NULL,
    start_date       timestamptz,
    end_date         timestamptz,
    duration_days    integer,
    ai_inspection_id uuid,
    status           varchar(32) NOT NULL DEFAULT 'pending',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS crop_inspections (
    id              uuid PRIMARY KEY,
    farmer_id       uuid,
    crop_type       varchar(120),
    status          varchar(32) NOT NULL,
    quality_score   numeric(5,2),
    freshness       varchar(32),
    visual_defects  text,
    shelf_life_days integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sensor_readings (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    location_id  uuid NOT NULL,
    sensor_id    varchar(64) NOT NULL,
    sensor_type  varchar(32) NOT NULL,
    value        double precision NOT NULL,
    unit         varchar(16) NOT NULL,
    reading_time timestamptz NOT NULL,
    status       varchar(16) NOT NULL DEFAULT 'active'
);

CREATE TABLE IF NOT EXISTS pest_detections (
    id          uuid PRIMARY KEY,
    location_id uuid NOT NULL,
    pest_type   varchar(64) NOT NULL,
    severity    varchar(16) NOT NULL,
    confidence  double precision NOT NULL,
    detected_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS certificates (
    id           uuid PRIMARY KEY,
    vendor_id    uuid NOT NULL,
    type         varchar(64) NOT NULL,
    issuer       varchar(255),
    status       varchar(16) NOT NULL,
    expiry_date  date,
    document_url text,
    score        integer
);

CREATE INDEX IF NOT EXISTS storage_bookings_location_idx ON storage_bookings (location_id);
CREATE INDEX IF NOT EXISTS storage_bookings_vendor_idx ON storage_bookings (vendor_id);
CREATE INDEX IF NOT EXISTS storage_bookings_inspection_idx ON storage_bookings (ai_inspection_id);
CREATE INDEX IF NOT EXISTS sensor_readings_location_time_idx
    ON sensor_readings (location_id, sensor_id, reading_time DESC);
CREATE INDEX IF NOT EXISTS pest_detections_location_time_idx
    ON pest_detections (location_id, detected_at DESC);
CREATE INDEX IF NOT EXISTS certificates_vendor_idx ON certificates (vendor_id);

-- A delete event must carry the foreign key (location_id, vendor_id) so that the pipeline can
-- route it to the right key space, and an update of a row with a TOASTed text column must carry
-- that column rather than Debezium's "__debezium_unavailable_value" placeholder: both need the
-- whole old row in the WAL.
ALTER TABLE storage_bookings REPLICA IDENTITY FULL;
ALTER TABLE crop_inspections REPLICA IDENTITY FULL;
ALTER TABLE sensor_readings REPLICA IDENTITY FULL;
ALTER TABLE pest_detections REPLICA IDENTITY FULL;
ALTER TABLE certificates REPLICA IDENTITY FULL;
