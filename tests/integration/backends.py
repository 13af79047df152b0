"""Where the integration suite finds its services: the local stack, or docker-compose.yml.

``MIS_TEST_BACKEND=native`` (the default, and what CI runs) uses the stack that
``python -m launcher up`` started; ``MIS_TEST_BACKEND=containers`` brings up docker-compose.yml's
postgres, kafka, connect and mongo with testcontainers, registers the connector with the compose
file's one-shot ``register`` service, and removes the project when the session ends. Either way
the services answer on the MIS_* ports of the host, so ``Settings()`` and the workers the tests
start reach them unchanged. The compose ``worker`` is left out: the tests start their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from launcher.stack import Stack
from streams.config import Settings

Backend = Literal["native", "containers"]
BACKENDS: tuple[Backend, ...] = ("native", "containers")
ENV = "MIS_TEST_BACKEND"

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = "docker-compose.yml"
#: the long-running services the tests need; `register` runs once after them
SERVICES = ("postgres", "kafka", "connect", "mongo")
REGISTER = "register"
#: its own compose project, so that tearing it down never touches a user's `docker compose up`
PROJECT = "market-snapshots-it"


class BackendError(Exception):
    """The selected backend could not provide the services; the message says why."""


def selected() -> Backend:
    name = os.environ.get(ENV, "").strip().lower() or "native"
    for backend in BACKENDS:
        if name == backend:
            return backend
    raise BackendError(f"{ENV}={name!r}: choose one of {', '.join(BACKENDS)}")


@cache
def docker_problem() -> str | None:
    """None when a Docker engine and `docker compose` answer, else why not (one line)."""
    import docker  # testcontainers' own client library
    from docker.errors import DockerException

    try:
        docker.from_env(timeout=5).ping()
    except (DockerException, OSError) as exc:
        return f"no Docker engine reachable: {_first_line(exc)}"
    if shutil.which("docker") is None:
        return "no `docker` command on PATH (testcontainers runs `docker compose`)"
    found = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        return f"`docker compose` is not available: {_first_line(found.stderr or found.stdout)}"
    return None


def skip_reason() -> str | None:
    """Why the selected backend cannot run here, when it is one that may be skipped.

    Only the containers backend is ever skipped; the native one fails instead (conftest.py).
    """
    return docker_problem() if selected() == "containers" else None


def describe() -> str:
    """One line for pytest's header: which backend, and how it gets its services."""
    try:
        backend = selected()
    except BackendError as exc:
        return f"integration backend: invalid ({exc})"
    if backend == "native":
        return f"integration backend: native (the local stack; {ENV}=containers for Docker)"
    problem = docker_problem()
    tail = f"; skipped: {problem}" if problem else ""
    return f"integration backend: containers ({COMPOSE_FILE} via testcontainers){tail}"


@dataclass(frozen=True)
class ComposeStack:
    """docker-compose.yml's services as the integration suite uses them."""

    settings: Settings
    project: str

    def problems(self) -> list[str]:
        """Why a service or the connector is not ready, probed from the host; [] when all are."""
        local = Stack.from_settings(self.settings)
        found = [
            f"{comp.name}: {reason}"
            for comp in local.components()
            if (reason := comp.probe()) is not None
        ]
        found += [
            f"connector {name}: {state} tasks={tasks}"
            for name, state, tasks in local.connector_states()
            if state != "RUNNING" or not tasks or any(t != "RUNNING" for t in tasks)
        ]
        return found


@contextmanager
def compose_stack(settings: Settings) -> Iterator[ComposeStack]:
    """Bring docker-compose.yml up for the session and remove it (volumes too) afterwards."""
    from testcontainers.compose import DockerCompose

    previous = os.environ.get("COMPOSE_PROJECT_NAME")
    os.environ["COMPOSE_PROJECT_NAME"] = PROJECT
    # docker-compose.yml has no default password: the containers get the one the tests use.
    os.environ.setdefault("MIS_PG_PASSWORD", settings.pg_password.get_secret_value())
    compose = DockerCompose(
        REPO, compose_file_name=COMPOSE_FILE, services=list(SERVICES), wait=True
    )
    command = compose.docker_compose_command()
    try:
        try:
            compose.start()  # `up --wait`: until every service's healthcheck passes
        except subprocess.CalledProcessError as exc:
            raise BackendError(
                f"`{' '.join(map(str, exc.cmd))}` failed (exit {exc.returncode}): "
                f"{_tail(exc.stderr or exc.stdout)}"
            ) from exc
        _run([*command, "run", "--rm", "--build", REGISTER], what="registering the connector")
        stack = ComposeStack(settings, PROJECT)
        problems = stack.problems()
        if problems:
            raise BackendError("compose stack up but not ready: " + "; ".join(problems))
        yield stack
    finally:
        _run(
            [*command, "down", "--volumes", "--remove-orphans"],
            what="removing the stack",
            check=False,
        )
        if previous is None:
            os.environ.pop("COMPOSE_PROJECT_NAME", None)
        else:
            os.environ["COMPOSE_PROJECT_NAME"] = previous


def _run(argv: list[str], *, what: str, check: bool = True) -> None:
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise BackendError(
            f"{what} failed (`{' '.join(argv)}`, exit {result.returncode}): "
            f"{_tail(result.stderr or result.stdout)}"
        )


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _first_line(value: object) -> str:
    lines = _text(value).strip().splitlines()
    return lines[0] if lines else type(value).__name__


def _tail(value: object, lines: int = 20) -> str:
    return "\n".join(_text(value).strip().splitlines()[-lines:]) or "no output"
