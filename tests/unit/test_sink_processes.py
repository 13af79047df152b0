"""The sinks as child processes: started, started again when they exit, stopped, and gone with
a worker that is killed. Real processes (a stand-in command), no services."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from streams.sinks.processes import SinkProcesses


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: only its parent's wait is missing.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_children_run_are_started_again_after_exiting_and_stop_with_the_supervisor(
    tmp_path: Path,
) -> None:
    starts = tmp_path / "starts"

    def command(name: str) -> list[str]:
        # Records each start; the first "mongodb" exits at once, every other one stays up.
        script = textwrap.dedent(
            f"""
            import pathlib, sys, time
            log = pathlib.Path({str(starts)!r})
            before = log.read_text().count({name!r}) if log.exists() else 0
            with log.open("a") as f:
                f.write({name!r} + "\\n")
            if {name!r} == "mongodb" and before == 0:
                sys.exit(3)
            time.sleep(60)
            """
        )
        return [sys.executable, "-c", script]

    async def scenario() -> tuple[list[str], list[int]]:
        procs = SinkProcesses(["postgres", "mongodb"], command=command, grace_s=5)
        await procs.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = starts.read_text() if starts.exists() else ""
            if text.count("mongodb") >= 2 and procs.children["mongodb"].poll() is None:
                break
            await asyncio.sleep(0.05)
        pids = [c.pid for c in procs.children.values()]
        procs.stop()
        return starts.read_text().split(), pids

    lines, pids = asyncio.run(scenario())
    assert lines.count("postgres") == 1
    assert lines.count("mongodb") == 2  # exited with 3, started again after the backoff
    assert not any(_alive(pid) for pid in pids)


def test_children_die_with_a_worker_killed_by_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = textwrap.dedent(
        f"""
        import asyncio, pathlib, sys
        from streams.sinks.processes import SinkProcesses

        async def main():
            sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
            procs = SinkProcesses(["postgres"], command=lambda name: sleep)
            await procs.start()
            pathlib.Path({str(pid_file)!r}).write_text(str(procs.children["postgres"].pid))
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", parent], cwd=Path(__file__).parents[2])
    try:
        assert _until(lambda: pid_file.exists() and pid_file.read_text())
        child = int(pid_file.read_text())
        assert _alive(child)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert _until(lambda: not _alive(child)), "the sink process outlived its killed worker"
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_sink_process_whose_worker_is_gone_stops_and_one_whose_worker_lives_waits() -> None:
    import threading

    from streams.sinks.processes import stop_when_orphaned

    orphaned = threading.Event()
    # A parent it does not have any more: the process was handed to another.
    stop_when_orphaned(orphaned, parent=-1, every_s=0.01)
    assert orphaned.is_set()

    kept = threading.Event()
    watch = threading.Thread(target=stop_when_orphaned, args=(kept, os.getppid(), 0.01))
    watch.start()
    assert not _until(lambda: not watch.is_alive(), timeout=0.3)  # its parent is still there
    assert not kept.is_set()
    kept.set()  # stopped for another reason: the watch ends without touching it
    watch.join(5)
    assert not watch.is_alive()
