"""Connectors from connectors/*.json, registered idempotently with PUT /connectors/{name}/config."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.connect import rest
from launcher.errors import ConnectorError
from launcher.paths import CONNECTORS_DIR
from streams.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    config: dict[str, str]
    source: Path


def load(directory: Path = CONNECTORS_DIR) -> list[ConnectorSpec]:
    specs = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        specs.append(ConnectorSpec(doc["name"], dict(doc["config"]), path))
    return specs


def replication_objects(specs: list[ConnectorSpec]) -> tuple[list[str], list[str]]:
    """The Postgres slots and publications the Debezium connectors own."""
    slots = [s.config["slot.name"] for s in specs if "slot.name" in s.config]
    pubs = [s.config["publication.name"] for s in specs if "publication.name" in s.config]
    return slots, pubs


def register(settings: Settings, spec: ConnectorSpec) -> None:
    status, body = rest(settings, "PUT", f"/connectors/{spec.name}/config", spec.config, 60)
    if status not in (200, 201):
        raise ConnectorError(f"Connect rejected {spec.source.name}: {status} {_message(body)}")
    log.info("connector %s registered (%s)", spec.name, "created" if status == 201 else "updated")


def state(settings: Settings, name: str) -> tuple[str, list[str], str | None]:
    """(connector state, task states, first trace line of a failure)."""
    status, body = rest(settings, "GET", f"/connectors/{name}/status", timeout=5)
    if status != 200 or not isinstance(body, dict):
        return "UNKNOWN", [], None
    tasks: list[dict[str, Any]] = body.get("tasks", [])
    trace = next(
        (t.get("trace") for t in [body.get("connector", {}), *tasks] if t.get("trace")), None
    )
    first = trace.strip().splitlines()[0] if trace else None
    return body.get("connector", {}).get("state", "UNKNOWN"), [t["state"] for t in tasks], first


def wait_running(settings: Settings, spec: ConnectorSpec, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    conn_state = "UNKNOWN"
    tasks: list[str] = []
    while time.monotonic() < deadline:
        conn_state, tasks, trace = state(settings, spec.name)
        if "FAILED" in (conn_state, *tasks):
            raise ConnectorError(f"connector {spec.name} FAILED: {trace}")
        if conn_state == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
            return
        time.sleep(0.3)
    raise ConnectorError(
        f"connector {spec.name} not RUNNING after {timeout_s:.0f}s "
        f"(connector={conn_state}, tasks={tasks}); see the connect log"
    )


def register_all(settings: Settings) -> list[ConnectorSpec]:
    specs = load()
    for spec in specs:
        register(settings, spec)
    for spec in specs:
        wait_running(settings, spec)
    return specs


def delete_all(settings: Settings) -> None:
    for spec in load():
        status, body = rest(settings, "DELETE", f"/connectors/{spec.name}", timeout=30)
        if status not in (204, 404):
            raise ConnectorError(f"could not delete connector {spec.name}: {_message(body)}")
        if status == 204:
            log.info("connector %s deleted", spec.name)


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message", body)).splitlines()[0]
    return str(body)[:200]
