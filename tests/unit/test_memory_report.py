"""The worker's memory report names the lines holding the most traced memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from streams.runtime import memory


def test_the_report_names_the_line_that_holds_the_memory(tmp_path: Path) -> None:
    assert memory.start(tmp_path, every_s=0.01) is None  # not tracing: no thread, no file
    tracemalloc.start()
    try:
        held = [bytes(1024) for _ in range(4096)]  # 4 MiB from one line
        text = memory.report(top=5)
    finally:
        tracemalloc.stop()
    assert len(held) == 4096
    first = text.splitlines()[1]
    assert first.endswith(f"{__file__}:15"), text
    assert float(first.split()[0]) >= 4.0
    assert not (tmp_path / "memory.txt").exists()


def test_tune_caps_the_arenas_and_trims_on_glibc() -> None:
    libc = memory._glibc()
    assert libc is not None  # the machine and the images run glibc
    assert memory.tune(arenas=0, trim_every_s=0) is None  # nothing to run
    thread = memory.tune(arenas=4, trim_every_s=3600)
    assert thread is not None and thread.is_alive() and thread.name == "malloc-trim"
    assert libc.malloc_trim(0) in (0, 1)
