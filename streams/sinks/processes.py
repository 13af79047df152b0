"""The sinks as child processes of a worker: one ``mis sink --only <name>`` each.

A worker's agents and its sinks are all Python: in threads of one process they share one
interpreter lock, and under load the sinks' decoding and statement building take turns with the
join instead of running beside it. As children, each sink has a core of its own when one is
free. A child inherits the worker's environment (its settings), is asked to stop with the worker
(SIGTERM, then SIGKILL after a grace period), dies with it when the worker is killed (the
kernel's parent-death signal), and is started again with capped backoff if it exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from streams import metrics

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the worker dies, even by SIGKILL, so does it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


METRICS_FILE_ENV = "MIS_SINK_METRICS_FILE"


def sink_command(name: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", "sink", "--only", name]


def metrics_file(directory: Path, name: str) -> Path:
    """Where the sink process ``name`` of a worker writes its metrics, for the worker's
    /metrics to merge (streams.metrics.exposition)."""
    return directory / f"metrics-sink-{name}.prom"


def write_metrics_while(stop: threading.Event, path: Path, every_s: float = 0.5) -> None:
    """In a sink process: write its metrics to ``path`` every ``every_s`` until ``stop``."""
    while True:
        try:
            metrics.write_file(path)
        except OSError:
            log.exception("metrics not written path=%s", path)
        if stop.wait(every_s):
            return


def stop_when_orphaned(stop: threading.Event, parent: int, every_s: float = 1.0) -> None:
    """In a sink process: set ``stop`` once its parent is no longer ``parent`` (it died and the
    process was handed to another), unless ``stop`` was set first."""
    while not stop.wait(every_s):
        if os.getppid() != parent:
            log.warning("the worker that started this sink process is gone: stopping")
            stop.set()
            return


class SinkProcesses:
    """Keeps one child process per sink running until ``stop``."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        metrics_dir: Path | None = None,
        command: Callable[[str], list[str]] = sink_command,
        backoff_max_s: float = 30.0,
        grace_s: float = 10.0,
    ) -> None:
        self.names, self.command, self.metrics_dir = tuple(names), command, metrics_dir
        self.backoff_max_s, self.grace_s = backoff_max_s, grace_s
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def metrics_files(self) -> list[Path]:
        if self.metrics_dir is None:
            return []
        return [metrics_file(self.metrics_dir, name) for name in self.names]

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        if self.metrics_dir is not None:
            path = metrics_file(self.metrics_dir, name)
            path.unlink(missing_ok=True)  # what a stopped child left says nothing any more
            env[METRICS_FILE_ENV] = str(path)
        child = subprocess.Popen(self.command(name), env=env, preexec_fn=_die_with_parent)
        log.info("sink process started sink=%s pid=%s", name, child.pid)
        self.children[name] = child
        return child

    async def start(self) -> None:
        for name in self.names:
            self._spawn(name)
            self._tasks.append(asyncio.ensure_future(self._watch(name)))

    async def _watch(self, name: str) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            child = self.children[name]
            code = child.poll()
            if code is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=0.5)
                continue
            # 0: it was asked to stop (its worker's process group was signalled, say); the
            # worker's own shutdown, if that is what it is, stops this watch meanwhile.
            log.log(
                logging.INFO if code == 0 else logging.ERROR,
                "sink process exited sink=%s pid=%s code=%s; starting it again in %.0fs",
                name,
                child.pid,
                code,
                backoff,
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                return
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self.backoff_max_s)
            self._spawn(name)

    def stop(self) -> None:
        """Ask every child to stop, wait for them (SIGKILL after the grace period)."""
        self._stopping.set()
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for name, child in self.children.items():
            try:
                child.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                log.warning("sink process did not stop in time sink=%s; killing it", name)
                child.kill()
                child.wait()
        for task in self._tasks:
            task.cancel()
