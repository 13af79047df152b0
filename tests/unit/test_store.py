"""The RocksDB databases of a worker share one block cache and one memtable budget."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from streams.runtime import store


def _value(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


def test_databases_share_the_budget(tmp_path: Path) -> None:
    shared = store.budget(cache_mb=8, memtables_mb=16)
    assert store.budget(cache_mb=1, memtables_mb=1) is shared  # the first caller sets it
    before = shared.buffers.get_usage()
    options = store.Options(shared, write_buffer_size=4 * store.MIB)
    dbs = [options.open(tmp_path / f"db{i}") for i in range(2)]
    for i, db in enumerate(dbs):
        for n in range(2000):
            db[f"key-{i}-{n}".encode()] = b"x" * 200
    # both databases' memtables count against the one manager, and /metrics shows it
    grown = shared.buffers.get_usage() - before
    assert grown >= 2 * 2000 * 200
    assert _value("mis_rocksdb_memtable_bytes") == shared.buffers.get_usage()
    for db in dbs:
        db.flush()
    # reading back goes through the shared cache
    assert dbs[0][b"key-0-7"] == b"x" * 200
    assert _value("mis_rocksdb_block_cache_bytes") > 0
    for db in dbs:
        db.close()


def test_install_registers_the_store_for_rocksdb_urls() -> None:
    import faust.stores

    store.install()
    assert faust.stores.by_url("rocksdb://") is store.Store
