"""Every table of one app: the join state, on RocksDB with a changelog topic each
(names in streams.topology)."""

from __future__ import annotations

import faust
from faust.types import TableT

from streams import topology
from streams.config import Settings

_HELP = {
    "location": "sensors, pests and subscribers per location",
    "vendor": "certificates and subscribers per vendor",
    "inspection": "the inspection and its subscribers",
    "booking": "a booking, its links to its parts, the last snapshot",
}


class Tables:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self._app, self._settings = app, settings
        #: the state of each key space's keys, by key space
        self.state: dict[str, TableT] = {
            space: self._table(name, _HELP[space]) for space, name in topology.STATE_TABLES.items()
        }
        self.location_state = self.state["location"]
        self.vendor_state = self.state["vendor"]
        self.inspection_state = self.state["inspection"]
        self.booking_state = self.state["booking"]
        self.truncations = self._table(
            topology.TRUNCATIONS_TABLE,
            "per key-space partition: the version of each source table's last TRUNCATE",
        )
        self.booking_parts = self._table(
            topology.PARTS_TABLE,
            "per booking partition: the parts of the locations, vendors and inspections it "
            "listens to",
        )

    def all(self) -> list[TableT]:
        return [*self.state.values(), self.truncations, self.booking_parts]

    def _table(self, name: str, help: str) -> TableT:
        # Keys and values are raw bytes: values are pydantic JSON (see agents.common), which
        # pydantic writes and reads several times faster than Faust's json codec would.
        mib, s = 1024 * 1024, self._settings
        return self._app.Table(
            name,
            partitions=s.partitions,
            key_type=bytes,
            value_type=bytes,
            help=help,
            # Faust's RocksDB store reads the first three (faust.stores.rocksdb.RocksDBOptions),
            # streams.runtime.store the budget every database of the worker shares.
            options={
                "write_buffer_size": s.rocksdb_write_buffer_mb * mib,
                "max_write_buffer_number": 2,
                "target_file_size_base": s.rocksdb_write_buffer_mb * mib,
                "block_cache_mb": s.rocksdb_block_cache_mb,
                "memtables_mb": s.rocksdb_memtables_mb,
            },
        )
