"""A worker's memory: how the C allocator keeps it, and where its Python memory goes.

glibc's malloc gives each thread that allocates an arena of its own (up to eight per core),
and keeps what is freed in it for later. A worker has many such threads (librdkafka's, RocksDB's,
the gatherer's) and frees much: the Kafka messages and states of each batch. Freed memory then
stays with the process, spread over a dozen arenas. ``tune`` caps the arenas
(``MIS_MALLOC_ARENAS``) and hands freed memory back to the system every ``MIS_MALLOC_TRIM_S``
(``malloc_trim``). Elsewhere than glibc it does nothing.


Started by ``mis worker`` when Python traces its allocations (``PYTHONTRACEMALLOC=1``, or
``-X tracemalloc``): a thread writes the lines of code holding the most memory, and the total,
to ``memory.txt`` in the worker's data directory every ``MIS_MEMORY_REPORT_S`` (120 s). Tracing
slows the worker; it is for finding what holds memory, not for production.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

TOP = 40
#: mallopt's parameter for the most arenas glibc makes (malloc.h)
M_ARENA_MAX = -8

log = logging.getLogger(__name__)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


def tune(arenas: int, trim_every_s: float) -> threading.Thread | None:
    """Cap glibc's arenas at ``arenas`` (0: its default) and, if ``trim_every_s``, start a
    thread that returns freed memory to the system that often. Call it before the process
    starts threads of its own: a thread's arena is made when it first allocates."""
    libc = _glibc()
    if libc is None:
        return None
    if arenas and not libc.mallopt(M_ARENA_MAX, arenas):
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; glibc's arenas are not capped", arenas)
    if not trim_every_s:
        return None

    def loop() -> None:
        while True:
            time.sleep(trim_every_s)
            libc.malloc_trim(0)

    thread = threading.Thread(target=loop, name="malloc-trim", daemon=True)
    thread.start()
    return thread


def report(top: int = TOP) -> str:
    """The lines holding the most traced memory now, with the total."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    _, peak = tracemalloc.get_traced_memory()
    lines = [
        f"{datetime.now(UTC).isoformat(timespec='seconds')}: traced {total / 2**20:,.1f} MiB "
        f"(peak {peak / 2**20:,.1f} MiB) in {len(stats):,} lines; the top {top}:"
    ]
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{frame.filename}:{frame.lineno}"
        lines.append(f"  {stat.size / 2**20:8.1f} MiB {stat.count:>9,} blocks  {where}")
    return "\n".join(lines) + "\n"


def start(data_dir: Path, every_s: float | None = None) -> threading.Thread | None:
    """Write ``report()`` to ``data_dir/memory.txt`` every ``every_s``, if tracemalloc traces."""
    if not tracemalloc.is_tracing():
        return None
    every = every_s or float(os.environ.get("MIS_MEMORY_REPORT_S", "120"))
    target = data_dir / "memory.txt"

    def loop() -> None:
        while True:
            time.sleep(every)
            data_dir.mkdir(parents=True, exist_ok=True)
            with target.open("a") as out:
                out.write(report())

    thread = threading.Thread(target=loop, name="memory-report", daemon=True)
    thread.start()
    return thread
