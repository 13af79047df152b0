"""Data contracts: Debezium change events, source rows, the snapshot and the listing."""
