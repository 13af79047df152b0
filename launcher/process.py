"""Detached child processes tracked by pid files that survive the launcher's own exit.

A pid file holds the pid and the process's start time (from /proc), so a recycled pid is never
mistaken for the component and never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracked:
    pid: int
    start_ticks: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> Tracked:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            # Own session: Ctrl-C in the launcher's terminal does not reach the stack, and the
            # whole group can be killed if the leader ignores SIGTERM.
            start_new_session=True,
        )
    ticks = _start_ticks(proc.pid) or 0
    pid_file.write_text(f"{proc.pid} {ticks}\n")
    log.debug("spawned pid=%s argv0=%s log=%s", proc.pid, argv[0], log_file)
    return Tracked(proc.pid, ticks)


def read_pid_file(pid_file: Path) -> Tracked | None:
    try:
        pid, ticks = pid_file.read_text().split()
        return Tracked(int(pid), int(ticks))
    except (OSError, ValueError):
        return None


def is_alive(proc: Tracked) -> bool:
    fields = _stat_fields(proc.pid)
    if fields is None or fields[0] == "Z":
        if fields is not None:
            _reap(proc.pid)
        return False
    return int(fields[19]) == proc.start_ticks


def _reap(pid: int) -> None:
    # Only our own children can be reaped; anything else raises ChildProcessError.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive_from_file(pid_file: Path) -> Tracked | None:
    proc = read_pid_file(pid_file)
    return proc if proc is not None and is_alive(proc) else None


def stop(proc: Tracked, *, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> bool:
    """Signal, wait, then SIGKILL the process group. Returns False when it had to kill."""
    if not is_alive(proc):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(proc):
            _kill_group(proc.pid)  # stragglers (e.g. a Postgres backend) go with the leader
            return True
        time.sleep(0.1)
    log.warning(
        "pid=%s ignored signal %s for %.0fs; killing its process group", proc.pid, sig, timeout_s
    )
    _kill_group(proc.pid)
    for _ in range(50):
        if not is_alive(proc):
            break
        time.sleep(0.1)
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass(frozen=True)
class Memory:
    rss_bytes: int
    peak_bytes: int
    processes: int


def group_memory(leader: Tracked) -> Memory:
    """Current and peak resident memory summed over the leader's process group."""
    rss = peak = count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[2]) != leader.pid:  # field 5: process group id
            continue
        status = _status(int(entry.name))
        rss += status.get("VmRSS", 0)
        peak += status.get("VmHWM", 0)
        count += 1
    return Memory(rss, peak, count)


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out
