"""The worker's memory report names the lines holding the most traced memory."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from streams.runtime import memory


def test_the_report_names_the_line_that_holds_the_memory(tmp_path: Path) -> None:
    assert memory.start(tmp_path, every_s=0.01) is None  # not tracing: no thread, no file
    tracemalloc.start()
    try:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        held = [bytes(1024) for _ in range(4096)]  # 4 MiB from one line
        text = memory.report(top=5)
    finally:
        tracemalloc.stop()
    assert len(held) == 4096
    first = text.splitlines()[1]
    assert first.endswith(f"{__file__}:{line}"), text
    assert float(first.split()[0]) >= 4.0
    assert not (tmp_path / "memory.txt").exists()


def test_tune_caps_the_arenas_and_trims_on_glibc() -> None:
    libc = memory._glibc()
    assert libc is not None  # the machine and the images run glibc
    assert memory.tune(arenas=0, trim_every_s=0) is None  # nothing to run
    thread = memory.tune(arenas=4, trim_every_s=3600)
    assert thread is not None and thread.is_alive() and thread.name == "malloc-trim"
    assert libc.malloc_trim(0) in (0, 1)


_MAPPED_AFTER_A_LARGER_FREE = """
import ctypes, sys
from streams.runtime import memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = memory._glibc()
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] != "0":
    memory.tune(arenas=0, trim_every_s=0, mmap_threshold_kb=int(sys.argv[1]))
libc.free(libc.malloc(8 * 2**20))  # glibc's own threshold rises to 8 MiB when this is freed
before = libc.mallinfo2().hblkhd
libc.malloc(2**20)
print(libc.mallinfo2().hblkhd - before)
"""


def test_a_fixed_mmap_threshold_maps_large_blocks_even_after_a_larger_one_was_freed() -> None:
    # In a process of its own: a block is mapped only when the heap has no room for it.
    def mapped(threshold_kb: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _MAPPED_AFTER_A_LARGER_FREE, str(threshold_kb)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        return int(out.stdout)

    assert mapped(0) == 0  # glibc's own: from the heap
    assert mapped(256) >= 2**20  # a mapping of its own


def test_glibc_is_kept_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIS_STARTED_WITH_ALLOCATOR", raising=False)
    monkeypatch.setattr(memory.os, "execve", _no_exec)
    memory.start_with("glibc")


def _no_exec(*args: Any) -> None:
    raise AssertionError(f"the process was started again: {args}")


def test_auto_without_jemalloc_keeps_glibc_and_jemalloc_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MIS_STARTED_WITH_ALLOCATOR", raising=False)
    monkeypatch.setattr(memory, "jemalloc_library", lambda: None)
    monkeypatch.setattr(memory.os, "execve", _no_exec)
    memory.start_with("auto")
    with pytest.raises(memory.AllocatorMissing, match="apt-get install libjemalloc2"):
        memory.start_with("jemalloc")


def test_jemalloc_starts_the_process_again_with_it_preloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MIS_STARTED_WITH_ALLOCATOR", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    monkeypatch.setattr(memory, "jemalloc_library", lambda: "libjemalloc.so.2")
    started: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(memory.os, "execve", lambda *args: started.append(args))
    memory.start_with("auto")
    ((program, argv, env),) = started
    assert (program, argv) == (sys.executable, sys.orig_argv)
    assert env["LD_PRELOAD"] == "libjemalloc.so.2 libother.so"
    assert env["MALLOC_CONF"] == memory.JEMALLOC_CONF
    monkeypatch.setenv("MIS_STARTED_WITH_ALLOCATOR", env["MIS_STARTED_WITH_ALLOCATOR"])
    memory.start_with("jemalloc")  # started with it already: not again
    assert len(started) == 1


def test_a_process_started_with_jemalloc_runs_with_it() -> None:
    # The machine has jemalloc (.ci/run installs libjemalloc2): the real start, in a process
    # of its own.
    assert memory.jemalloc_library(), "jemalloc is not installed: apt-get install libjemalloc2"
    script = (
        "import os, sys\n"
        "from streams.runtime import memory\n"
        "if not os.environ.get('MIS_STARTED_WITH_ALLOCATOR'):\n"
        "    print('before', memory.jemalloc_active(), flush=True)\n"
        "memory.start_with('jemalloc')\n"
        "print('after', memory.jemalloc_active(), memory.tune(2, 30) is None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    env.pop("MIS_STARTED_WITH_ALLOCATOR", None)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.split() == ["before", "False", "after", "True", "True"], out.stderr
