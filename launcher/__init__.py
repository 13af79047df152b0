"""The local stack: Postgres, Kafka (KRaft), Kafka Connect + Debezium and FerretDB as processes."""
