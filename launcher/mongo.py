"""The MongoDB-wire server (patched FerretDB on SQLite), built and run by launcher.ferretdb."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from launcher.component import Component
from launcher.errors import ResolveError
from launcher.kafka import port_open
from streams.config import Settings


def _ferretdb() -> ModuleType:
    # Imported late: the Go build lives in its own module and only `up` needs it.
    try:
        return importlib.import_module("launcher.ferretdb")
    except ImportError as exc:
        raise ResolveError(f"launcher.ferretdb is not available: {exc}") from exc


def ensure_binary(settings: Settings) -> Path:
    module = _ferretdb()
    build_error = getattr(module, "FerretDBBuildError", RuntimeError)
    try:
        return Path(module.ensure_ferretdb(settings))
    except build_error as exc:
        raise ResolveError(str(exc)) from exc


class Mongo(Component):
    name = "mongo"
    start_timeout_s = 30.0
    _binary: Path | None = None

    @property
    def port(self) -> int:
        return self.settings.mongo_port

    def prepare(self) -> None:
        self._binary = ensure_binary(self.settings)

    def argv(self) -> list[str]:
        binary = self._binary or ensure_binary(self.settings)
        return [str(a) for a in _ferretdb().ferretdb_command(self.settings, binary)]

    def env(self) -> Mapping[str, str]:
        return dict(_ferretdb().ferretdb_env())

    def probe(self) -> str | None:
        if not port_open(self.port):
            return f"port {self.port} not open"
        client: MongoClient[dict[str, Any]] = MongoClient(
            self.settings.mongo_url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
        )
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            return str(exc).splitlines()[0]
        finally:
            client.close()
        return None
