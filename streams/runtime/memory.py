"""A worker's memory: how the C allocator keeps it, and where its Python memory goes.

glibc's malloc gives each thread that allocates an arena of its own (up to eight per core),
and keeps what is freed in it for later. A worker has many such threads (librdkafka's, RocksDB's,
the gatherer's) and frees much: the Kafka messages and states of each batch. Freed memory then
stays with the process, spread over a dozen arenas. ``tune`` caps the arenas
(``MIS_MALLOC_ARENAS``), maps blocks of ``MIS_MALLOC_MMAP_THRESHOLD_KB`` and more on their own
instead of from a heap, and hands freed memory back to the system every ``MIS_MALLOC_TRIM_S``
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
import sys
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

TOP = 40
#: mallopt's parameters (malloc.h): the most arenas glibc makes; the size from which an
#: allocation is a mapping of its own; how much free memory at the top of a heap is kept
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1

log = logging.getLogger(__name__)


#: jemalloc's settings when a process is started with it and MALLOC_CONF is not set: two arenas
#: (as MIS_MALLOC_ARENAS caps glibc's), a thread of its own that returns pages freed for a
#: second, and freed pages returned at once instead of kept "muzzy".
JEMALLOC_CONF = "background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0"
#: Set in the environment of a process this module started again with jemalloc.
_STARTED_WITH = "MIS_STARTED_WITH_ALLOCATOR"


class AllocatorMissing(Exception):
    """MIS_ALLOCATOR=jemalloc, and jemalloc is not installed."""


def jemalloc_library() -> str | None:
    """The name the dynamic loader finds jemalloc by (``libjemalloc.so.2``), if installed."""
    return ctypes.util.find_library("jemalloc")


def allocator_of(pid: int | str = "self") -> str | None:
    """The C allocator process ``pid`` runs with, ``jemalloc`` or ``glibc``; None if unknown."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return "jemalloc" if any("libjemalloc" in line for line in maps) else "glibc"
    except OSError:
        return None


def jemalloc_active() -> bool:
    """Whether this process runs with jemalloc as its allocator."""
    return allocator_of() == "jemalloc"


def start_with(allocator: str) -> None:
    """Start this process again with jemalloc (``LD_PRELOAD``) unless it runs with it already.

    ``allocator``: ``glibc`` (nothing is done), ``jemalloc`` (AllocatorMissing if it is not
    installed) or ``auto`` (jemalloc if installed, else glibc, tuned by ``tune``). jemalloc
    keeps a long-running process's resident memory close to what it holds: it sorts blocks by
    size into pages of their own and returns the pages freed, where glibc's heaps keep the
    holes that a worker's batches and reads leave. Call it before anything else: the process
    is replaced, with the same arguments and environment."""
    if allocator == "glibc" or os.environ.get(_STARTED_WITH) or jemalloc_active():
        return
    library = jemalloc_library()
    if library is None:
        if allocator == "jemalloc":
            raise AllocatorMissing(
                "MIS_ALLOCATOR=jemalloc, but jemalloc is not installed "
                "(apt-get install libjemalloc2), or set MIS_ALLOCATOR=auto or glibc"
            )
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [library, env.get("LD_PRELOAD")]))
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    env[_STARTED_WITH] = "jemalloc"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


def tune(arenas: int, trim_every_s: float, mmap_threshold_kb: int = 0) -> threading.Thread | None:
    """Cap glibc's arenas at ``arenas`` (0: its default); make every allocation of at least
    ``mmap_threshold_kb`` a mapping of its own (0: glibc's default) and, if ``trim_every_s``,
    start a thread that returns freed memory to the system that often. Call it before the
    process starts threads of its own: a thread's arena is made when it first allocates.

    glibc's own threshold starts at 128 KiB and rises to the size of every mapped block freed,
    up to 32 MiB: after the first large fetch buffer or read is freed, blocks that size come
    from the heap, where each leaves a hole that the next ones fragment. A fixed threshold
    keeps them out of the heap (a mapping is returned whole when freed), and with it the
    heap's trim threshold at twice the mapping threshold instead of up to 64 MiB."""
    libc = _glibc()
    if libc is None or jemalloc_active():
        return None
    if arenas and not libc.mallopt(M_ARENA_MAX, arenas):
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; glibc's arenas are not capped", arenas)
    if mmap_threshold_kb:
        size = mmap_threshold_kb * 1024
        if not (libc.mallopt(M_MMAP_THRESHOLD, size) and libc.mallopt(M_TRIM_THRESHOLD, 2 * size)):
            log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused", size)
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
