"""Every table of the pipeline: the join state, on RocksDB with a changelog topic each."""

from __future__ import annotations

from faust.types import TableT

from streams import topology
from streams.app import app, settings


def _table(name: str, help: str) -> TableT:
    # Keys and values are raw bytes: values are pydantic JSON (see agents.common), which pydantic
    # writes and reads several times faster than Faust's json codec would.
    mib = 1024 * 1024
    return app.Table(
        name,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        help=help,
        # Faust's RocksDB store reads these (faust.stores.rocksdb.RocksDBOptions).
        options={
            "write_buffer_size": settings.rocksdb_write_buffer_mb * mib,
            "max_write_buffer_number": 2,
            "target_file_size_base": settings.rocksdb_write_buffer_mb * mib,
            "block_cache_size": settings.rocksdb_block_cache_mb * mib,
        },
    )


location_state = _table(
    topology.STATE_TABLES["location"], "sensors, pests and subscribers per location"
)
vendor_state = _table(topology.STATE_TABLES["vendor"], "certificates and subscribers per vendor")
inspection_state = _table(topology.STATE_TABLES["inspection"], "the inspection and its subscribers")
booking_state = _table(
    topology.STATE_TABLES["booking"], "a booking, its three parts, the last snapshot"
)
truncations = _table(
    topology.TRUNCATIONS_TABLE,
    "per key-space partition: the version of each source table's last TRUNCATE",
)
booking_parts = _table(
    topology.PARTS_TABLE,
    "per booking partition: the parts of the locations, vendors and inspections it listens to",
)
