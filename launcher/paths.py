"""Where the stack keeps its state (throwaway, under settings.state_dir) and its caches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streams.config import REPO_ROOT, Settings


@dataclass(frozen=True)
class StackPaths:
    state: Path
    cache: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackPaths:
        return cls(state=settings.state_dir.resolve(), cache=settings.cache_dir.expanduser())

    @property
    def marker(self) -> Path:
        """Present in every state directory the launcher made (and may therefore delete)."""
        return self.state / ".mis-stack"

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def component_dir(self, component: str) -> Path:
        return self.state / component

    # --- caches, kept across stacks
    @property
    def kafka_jars(self) -> Path:
        return self.cache / "jars" / "kafka"

    @property
    def plugin_path(self) -> Path:
        return self.cache / "connect-plugins"

    @property
    def debezium_plugin(self) -> Path:
        return self.plugin_path / "debezium-connector-postgres"

    @property
    def markers(self) -> Path:
        return self.cache / "markers"


MAVEN_DIR = REPO_ROOT / "launcher" / "maven"
CONNECTORS_DIR = REPO_ROOT / "connectors"
SQL_DIR = REPO_ROOT / "schemas" / "sql"
