"""Faust's RocksDB store, with one memory budget for every database of the worker.

Faust opens one RocksDB database per table and partition (six tables x MIS_PARTITIONS), and
gives each its own block cache and write buffers. What a worker holds in RocksDB then grows with
the number of databases, not with what it needs: at four partitions, 24 caches and 24 pairs of
memtables. Here every database of the process shares one block cache
(``MIS_ROCKSDB_BLOCK_CACHE_MB``) and one write buffer manager (``MIS_ROCKSDB_MEMTABLES_MB``),
which flushes the largest memtable when all of them together pass the budget. The index and
filter blocks are kept in the cache as well, so that they count against it.

The store is Faust's own (``faust.stores.rocksdb.Store``, through rocksdict); only the options
it opens its databases with differ. ``install`` registers it for the ``rocksdb://`` scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust.stores
import rocksdict
from faust.stores import rocksdb as faust_rocksdb
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

MIB = 1024 * 1024


@dataclass(frozen=True)
class Budget:
    """What every RocksDB database of the process shares."""

    cache: Any  # rocksdict.Cache
    buffers: Any  # rocksdict.WriteBufferManager
    cache_bytes: int
    memtable_bytes: int


_budget: Budget | None = None


def budget(cache_mb: int, memtables_mb: int) -> Budget:
    """The process's budget, made by its first caller: every app of the process shares it."""
    global _budget
    if _budget is None:
        _budget = Budget(
            cache=rocksdict.Cache(cache_mb * MIB),
            buffers=rocksdict.WriteBufferManager(memtables_mb * MIB, False),
            cache_bytes=cache_mb * MIB,
            memtable_bytes=memtables_mb * MIB,
        )
        REGISTRY.register(_Usage(_budget))
    return _budget


class Options(faust_rocksdb.RocksDBOptions):
    """Faust's options for one database, with the process's cache and write buffer manager
    (Faust's ``open`` builds the database from ``as_options``)."""

    def __init__(self, shared: Budget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shared = shared

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_write_buffer_manager(self.shared.buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self.shared.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store, opening its databases with ``Options``.

    The budget's sizes come from the table's options (``block_cache_mb``, ``memtables_mb``,
    see streams.runtime.tables); the first table of the process sets them."""

    def __init__(self, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        options = dict(options or {})
        cache_mb = int(options.pop("block_cache_mb", 32))
        memtables_mb = int(options.pop("memtables_mb", 64))
        super().__init__(*args, options=options, **kwargs)
        if not self.use_rocksdict:  # pragma: no cover - rocksdict is what the project installs
            raise RuntimeError("streams.runtime.store needs rocksdict (pip install rocksdict)")
        self.rocksdb_options = Options(
            budget(cache_mb, memtables_mb), **(self.options or {}), use_rocksdict=True
        )


def install() -> None:
    """Make ``rocksdb://`` open this store."""
    faust.stores.STORES.aliases["rocksdb"] = f"{__name__}:Store"


class _Usage(Collector):
    def __init__(self, shared: Budget) -> None:
        self._shared = shared

    def collect(self) -> list[Metric]:
        cache = GaugeMetricFamily(
            "mis_rocksdb_block_cache_bytes",
            "Bytes in the block cache every RocksDB database of the worker shares",
        )
        cache.add_metric([], float(self._shared.cache.get_usage()))
        memtables = GaugeMetricFamily(
            "mis_rocksdb_memtable_bytes",
            "Bytes in the memtables of every RocksDB database of the worker",
        )
        memtables.add_metric([], float(self._shared.buffers.get_usage()))
        return [cache, memtables]
