"""The integration suite's backend selection, and what the containers backend asks of Docker.

A stand-in `docker` on PATH records its command lines, so this runs without a Docker engine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from streams.config import Settings
from tests.integration import backends

FAKE_DOCKER = """\
#!/bin/sh
echo "$COMPOSE_PROJECT_NAME $*" >> "{log}"
case "$*" in *" run "*) exit "${{FAKE_RUN_EXIT:-0}}" ;; esac
"""


@pytest.fixture
def docker_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "docker.log"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(FAKE_DOCKER.format(log=log))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    monkeypatch.setattr(backends.ComposeStack, "problems", lambda self: [])
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_the_containers_backend_brings_up_the_services_registers_and_removes_everything(
    docker_log: Path,
) -> None:
    with backends.compose_stack(Settings()) as stack:
        assert os.environ["COMPOSE_PROJECT_NAME"] == backends.PROJECT
        assert stack.project == backends.PROJECT
    assert "COMPOSE_PROJECT_NAME" not in os.environ
    compose = f"{backends.PROJECT} compose -f docker-compose.yml"
    assert calls(docker_log) == [
        f"{compose} up --wait postgres kafka connect mongo",
        f"{compose} run --rm --build register",
        f"{compose} down --volumes --remove-orphans",
    ]


def test_a_failed_registration_fails_the_session_and_still_removes_the_stack(
    docker_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_RUN_EXIT", "3")
    with (
        pytest.raises(backends.BackendError, match="registering the connector failed"),
        backends.compose_stack(Settings()),
    ):
        pytest.fail("the stack must not be handed out")
    assert calls(docker_log)[-1].endswith("down --volumes --remove-orphans")


def test_a_service_that_is_not_ready_fails_the_session(
    docker_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends.ComposeStack, "problems", lambda self: ["mongo: port closed"])
    with (
        pytest.raises(backends.BackendError, match="mongo: port closed"),
        backends.compose_stack(Settings()),
    ):
        pytest.fail("the stack must not be handed out")
    assert calls(docker_log)[-1].endswith("down --volumes --remove-orphans")


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "native"), ("", "native"), ("Containers", "containers")]
)
def test_native_is_the_default_backend(
    value: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(backends.ENV, raising=False)
    else:
        monkeypatch.setenv(backends.ENV, value)
    assert backends.selected() == expected
    assert backends.describe().startswith(f"integration backend: {expected}")


def test_an_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.ENV, "docker")
    with pytest.raises(backends.BackendError, match="choose one of native, containers"):
        backends.selected()


def test_only_the_containers_backend_is_skipped_and_it_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backends, "docker_problem", lambda: "no Docker engine reachable: x")
    monkeypatch.setenv(backends.ENV, "native")
    assert backends.skip_reason() is None
    monkeypatch.setenv(backends.ENV, "containers")
    assert backends.skip_reason() == "no Docker engine reachable: x"
    assert backends.describe().endswith("skipped: no Docker engine reachable: x")
