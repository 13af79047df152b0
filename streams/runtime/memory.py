"""Where a worker's Python memory goes: with tracemalloc on, a report every few minutes.

Started by ``mis worker`` when Python traces its allocations (``PYTHONTRACEMALLOC=1``, or
``-X tracemalloc``): a thread writes the lines of code holding the most memory, and the total,
to ``memory.txt`` in the worker's data directory every ``MIS_MEMORY_REPORT_S`` (120 s). Tracing
slows the worker; it is for finding what holds memory, not for production.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

TOP = 40


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
