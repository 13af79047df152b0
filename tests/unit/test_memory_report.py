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
