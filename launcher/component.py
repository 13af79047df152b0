"""What the stack needs to know about each of its processes."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from launcher.paths import StackPaths
from streams.config import Settings


class Component(ABC):
    name: str
    #: Postgres shuts down "smart" on SIGTERM and waits for every client; SIGINT is its fast mode.
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 30.0
    start_timeout_s: float = 90.0
    #: run as this user (Postgres refuses to run as root)
    user: str | None = None

    def __init__(self, settings: Settings, paths: StackPaths) -> None:
        self.settings = settings
        self.paths = paths

    @property
    def directory(self) -> Path:
        return self.paths.component_dir(self.name)

    @property
    @abstractmethod
    def port(self) -> int: ...

    def ports(self) -> dict[str, int]:
        """Every port the component listens on, by role (checked free before start)."""
        return {self.name: self.port}

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Write config and initialise data, before the process starts."""

    @abstractmethod
    def argv(self) -> list[str]: ...

    def env(self) -> Mapping[str, str] | None:
        return None

    @abstractmethod
    def probe(self) -> str | None:
        """None when healthy, else a short reason why not (yet)."""

    def after_healthy(self) -> None:  # noqa: B027 - optional hook
        """One-off setup that needs the running process (databases, topics)."""

    def after_stop(self, clean: bool) -> None:  # noqa: B027 - optional hook
        """Keep what a cleanly stopped process left for the next start (class archives)."""
