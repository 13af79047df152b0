"""Bring the whole stack up in order, tear down exactly what was started, report on it."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from launcher import connectors, maven, preflight, process
from launcher.component import Component
from launcher.connect import Connect
from launcher.errors import StackError, StartError
from launcher.kafka import Kafka
from launcher.mongo import Mongo, ensure_binary
from launcher.paths import StackPaths
from launcher.postgres import Postgres, drop_replication
from streams.config import Settings

log = logging.getLogger(__name__)

#: start order; teardown runs in reverse
COMPONENTS: tuple[type[Component], ...] = (Postgres, Kafka, Connect, Mongo)
NAMES = tuple(c.name for c in COMPONENTS)


@dataclass(frozen=True)
class Stack:
    settings: Settings
    paths: StackPaths

    @classmethod
    def from_settings(cls, settings: Settings) -> Stack:
        return cls(settings, StackPaths.from_settings(settings))

    def component(self, name: str) -> Component:
        for cls in COMPONENTS:
            if cls.name == name:
                return cls(self.settings, self.paths)
        raise StackError(f"unknown component {name!r}; choose one of {', '.join(NAMES)}")

    def components(self) -> list[Component]:
        return [cls(self.settings, self.paths) for cls in COMPONENTS]

    def running(self) -> dict[str, process.Tracked]:
        found = {}
        for name in NAMES:
            proc = process.alive_from_file(self.paths.pid_file(name))
            if proc is not None:
                found[name] = proc
        return found

    # ------------------------------------------------------------------ up
    def up(self) -> float:
        """Start everything; returns the seconds it took. Leaves nothing running on failure."""
        began = time.monotonic()
        running = self.running()
        if running:
            if set(running) == set(NAMES) and self.healthy():
                log.info("stack already up (%s)", ", ".join(NAMES))
                return 0.0
            raise StackError(
                f"stack partly running ({', '.join(running)}): run `python -m launcher down` first"
            )
        preflight.check_tools()
        comps = {c.name: c for c in self.components()}
        for comp in comps.values():
            for role, port in comp.ports().items():
                preflight.check_port_free(role, port)
        self._resolve()
        self._fresh_state()

        started: list[tuple[Component, process.Tracked]] = []
        try:
            # The JVMs are the slow part: start Kafka first and let Postgres and FerretDB come
            # up while it boots. Connect needs Kafka, the connector needs Connect and Postgres.
            kafka, pg, mongo, connect = (
                comps[n] for n in ("kafka", "postgres", "mongo", "connect")
            )
            # Formatting Kafka's storage (a JVM) and initdb each take seconds: overlap them.
            with ThreadPoolExecutor(max_workers=3) as pool:
                for job in [pool.submit(c.prepare) for c in (kafka, pg, mongo)]:
                    job.result()
            procs = {}
            for comp in (kafka, pg, mongo):
                procs[comp.name] = self._launch(comp)
                started.append((comp, procs[comp.name]))
            for comp in (pg, mongo, kafka):
                self._healthy(comp, procs[comp.name], began, started)
                comp.after_healthy()
            connect.prepare()
            started.append((connect, self._launch(connect)))
            self._healthy(connect, started[-1][1], began, started)
            for spec in connectors.register_all(self.settings):
                log.info(
                    "%-9s %s RUNNING                (%5.1fs)",
                    "connector",
                    spec.name,
                    time.monotonic() - began,
                )
        except BaseException:
            log.error("start failed; stopping what was started")
            for comp, proc in reversed(started):
                process.stop(proc, sig=comp.stop_signal, timeout_s=comp.stop_timeout_s)
                self.paths.pid_file(comp.name).unlink(missing_ok=True)
            raise
        return time.monotonic() - began

    def _resolve(self) -> None:
        """Fetch jars and build FerretDB (cold start only), in parallel, before starting."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            jars = pool.submit(maven.resolve, self.paths)
            binary = pool.submit(ensure_binary, self.settings)
            jars.result()
            binary.result()

    def _fresh_state(self) -> None:
        # A throwaway stack: data left by an earlier run (a slot without its offsets, offsets
        # without their slot) would only make this run disagree with itself.
        self._remove_state()
        for d in (self.paths.run, self.paths.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.paths.marker.touch()

    def _remove_state(self) -> None:
        state = self.paths.state
        if not state.exists():
            return
        # MIS_STATE_DIR may point anywhere: only ever delete a directory this launcher made.
        if any(state.iterdir()) and not self.paths.marker.exists():
            raise StackError(
                f"{state} is not empty and was not made by the launcher; "
                "point MIS_STATE_DIR at a new directory"
            )
        shutil.rmtree(state)

    def _launch(self, comp: Component) -> process.Tracked:
        proc = process.spawn(
            comp.argv(),
            log_file=self.paths.log_file(comp.name),
            pid_file=self.paths.pid_file(comp.name),
            env=comp.env(),
            cwd=comp.directory if comp.directory.is_dir() else self.paths.state,
            user=comp.user,
        )
        log.debug("%s spawned pid=%s", comp.name, proc.pid)
        return proc

    def _healthy(
        self,
        comp: Component,
        proc: process.Tracked,
        began: float,
        started: list[tuple[Component, process.Tracked]],
    ) -> None:
        """Wait until ``comp`` is healthy. A component that could not bind its port, which was
        free a moment before, lost it to a client's ephemeral port (the defaults lie in Linux's
        ephemeral range): it is started again, twice at most, once the port is free."""
        for attempt in range(3):
            try:
                self._wait_healthy(comp, proc, began)
                return
            except StartError:
                log_text = "\n".join(tail(self.paths.log_file(comp.name), 200))
                if attempt == 2 or "Address already in use" not in log_text:
                    raise
            log.warning("%s lost its port to another socket; starting it again", comp.name)
            time.sleep(1.0)
            for port in comp.ports().values():
                preflight.check_port_free(comp.name, port)
            proc = self._launch(comp)
            started[:] = [(c, p) for c, p in started if c.name != comp.name]
            started.append((comp, proc))

    def _wait_healthy(self, comp: Component, proc: process.Tracked, began: float) -> None:
        deadline = time.monotonic() + comp.start_timeout_s
        reason: str | None = "not probed"
        while time.monotonic() < deadline:
            if not process.is_alive(proc):
                raise StartError(
                    f"{comp.name} exited during start: {self._last_line(comp.name)} "
                    f"(log: {self.paths.log_file(comp.name)})"
                )
            reason = comp.probe()
            if reason is None:
                log.info(
                    "%-9s healthy pid=%-7s port=%-5s (%5.1fs)",
                    comp.name,
                    proc.pid,
                    comp.port,
                    time.monotonic() - began,
                )
                return
            time.sleep(0.25)
        raise StartError(
            f"{comp.name} not healthy after {comp.start_timeout_s:.0f}s: {reason} "
            f"(log: {self.paths.log_file(comp.name)})"
        )

    def _last_line(self, name: str) -> str:
        lines = tail(self.paths.log_file(name), 1)
        return lines[0] if lines else "no output"

    # ------------------------------------------------------------------ down
    def down(self, *, purge: bool = False) -> list[str]:
        """Stop what `up` started; returns the names stopped."""
        running = self.running()
        comps = {c.name: c for c in self.components()}
        slots, pubs = connectors.replication_objects(connectors.load())
        if "connect" in running:
            with _warn_on_failure("deleting connectors"):
                connectors.delete_all(self.settings)
        stopped = []
        # Connect goes first so its walsender lets go of the slot before the slot is dropped.
        for name in ("connect", "mongo", "kafka", "postgres"):
            if name == "postgres" and name in running:
                with _warn_on_failure("dropping the replication slot and publication"):
                    pg = comps["postgres"]
                    assert isinstance(pg, Postgres)
                    drop_replication(pg, slots=slots, publications=pubs)
            proc = running.get(name)
            if proc is not None:
                comp = comps[name]
                peak = process.group_memory(proc).peak_bytes
                clean = process.stop(proc, sig=comp.stop_signal, timeout_s=comp.stop_timeout_s)
                comp.after_stop(clean)
                log.info(
                    "%-9s stopped pid=%s peak_rss=%.0fMiB%s",
                    name,
                    proc.pid,
                    peak / 2**20,
                    "" if clean else " (killed)",
                )
                stopped.append(name)
            self.paths.pid_file(name).unlink(missing_ok=True)
        if purge and self.paths.state.exists():
            self._remove_state()
            log.info("removed %s", self.paths.state)
        return stopped

    # ------------------------------------------------------------------ one component
    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one running component, keeping its data (``kill``: SIGKILL, no shutdown)."""
        comp = self.component(name)
        proc = process.alive_from_file(self.paths.pid_file(name))
        if proc is None:
            raise StackError(f"{name} is not running")
        if kill:
            process.stop(proc, sig=signal.SIGKILL, timeout_s=10)
        else:
            comp.after_stop(process.stop(proc, sig=comp.stop_signal, timeout_s=comp.stop_timeout_s))
        self.paths.pid_file(name).unlink(missing_ok=True)
        log.info("%-9s stopped%s", name, " (killed)" if kill else "")

    def start_component(self, name: str) -> float:
        """Start one stopped component again on the data it left; the seconds it took."""
        began = time.monotonic()
        comp = self.component(name)
        if process.alive_from_file(self.paths.pid_file(name)) is not None:
            raise StackError(f"{name} is already running")
        for role, port in comp.ports().items():
            preflight.check_port_free(role, port)
        proc = self._launch(comp)
        self._healthy(comp, proc, began, [(comp, proc)])
        return time.monotonic() - began

    # ------------------------------------------------------------------ status
    def healthy(self) -> bool:
        return all(r.healthy for r in self.status())

    def status(self) -> list[ComponentStatus]:
        out = []
        for comp in self.components():
            pid_file = self.paths.pid_file(comp.name)
            proc = process.read_pid_file(pid_file)
            if proc is None:
                out.append(ComponentStatus(comp.name, "stopped", None, comp.port, None, None))
                continue
            if not process.is_alive(proc):
                out.append(ComponentStatus(comp.name, "dead", proc.pid, comp.port, None, None))
                continue
            reason = comp.probe()
            mem = process.group_memory(proc)
            state = "healthy" if reason is None else f"unhealthy: {reason}"
            out.append(
                ComponentStatus(
                    comp.name, state, proc.pid, comp.port, mem.rss_bytes, mem.peak_bytes
                )
            )
        return out

    def connector_states(self) -> list[tuple[str, str, list[str]]]:
        result = []
        for spec in connectors.load():
            try:
                conn_state, tasks, _ = connectors.state(self.settings, spec.name)
            except OSError:
                conn_state, tasks = "UNREACHABLE", []
            result.append((spec.name, conn_state, tasks))
        return result


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str
    pid: int | None
    port: int
    rss_bytes: int | None
    peak_bytes: int | None

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"


@contextlib.contextmanager
def _warn_on_failure(what: str) -> Iterator[None]:
    # Teardown goes on past a failed step: stopping the processes matters more.
    try:
        yield
    except Exception as exc:
        log.warning("%s failed: %s", what, str(exc).splitlines()[0] if str(exc) else exc)


def tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return lines[-n:]
