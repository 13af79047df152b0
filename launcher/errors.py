"""One error root for the launcher; every message is the single line the user sees."""

from __future__ import annotations


class StackError(Exception):
    """Anything that stops the stack from coming up, going down or being inspected."""


class PreflightError(StackError):
    """A missing tool, user or a busy port, found before anything was started."""


class ResolveError(StackError):
    """Jars or binaries could not be fetched or built."""


class StartError(StackError):
    """A component did not start or did not become healthy in time."""


class ConnectorError(StackError):
    """Kafka Connect rejected a connector, or it or its task did not reach RUNNING."""


class TeardownError(StackError):
    """Something the stack left behind could not be removed."""
