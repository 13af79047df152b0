-- The listing-change events not yet acknowledged by Kafka (streams.sinks.outbox). The Postgres
-- sink inserts a batch's events in the transaction of its upserts and history rows; a publisher
-- sends them in seq order to their topic, waits for Kafka's acknowledgement, then deletes them.
-- A crash anywhere in between leaves them here, to be sent (again) by the next publisher: at
-- least once, deduplicated downstream by event_id. A booking's events take their seq under the
-- booking's row lock, so their seq order is the order of their commits.
CREATE TABLE IF NOT EXISTS market_listing_change_outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic        text NOT NULL,
    booking_id   uuid NOT NULL,
    event_id     text NOT NULL,
    -- The event's JSON as computed, sent byte for byte.
    payload      text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS mislco_topic_seq_idx ON market_listing_change_outbox (topic, seq);
