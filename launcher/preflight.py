"""Checks run before anything starts; each failure is one line saying what to do."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket

from launcher import jvm
from launcher.errors import PreflightError
from launcher.postgres import PG_BINDIR, PG_OS_USER

_PORT_ENV = {
    "postgres": "MIS_PG_PORT",
    "kafka": "MIS_KAFKA_PORT",
    "kafka controller": "MIS_KAFKA_CONTROLLER_PORT",
    "connect": "MIS_CONNECT_PORT",
    "mongo": "MIS_MONGO_PORT",
}


def check_tools(*, need_mvn: bool = True, need_go: bool = True) -> None:
    java = jvm.java_bin()
    major = jvm.java_major(java)
    if major < jvm.MIN_JAVA:
        raise PreflightError(
            f"{java} is Java {major}; Kafka 4 needs {jvm.MIN_JAVA}+: install openjdk-17 or set "
            "JAVA_HOME"
        )
    if need_mvn and shutil.which("mvn") is None:
        raise PreflightError("mvn not found: install Maven 3.8+ (apt-get install maven)")
    if need_go and shutil.which("go") is None:
        raise PreflightError(
            "go not found: install Go 1.24+ and put it on PATH (FerretDB is built from source)"
        )
    if need_go and shutil.which("patch") is None:
        raise PreflightError(
            "patch not found: apt-get install patch (FerretDB's source is patched before the build)"
        )
    for tool in ("postgres", "initdb"):
        if not (PG_BINDIR / tool).is_file():
            raise PreflightError(
                f"{PG_BINDIR / tool} not found: apt-get install postgresql-15 "
                "(or set MIS_PG_BINDIR to a PostgreSQL 15 bin directory)"
            )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            raise PreflightError(
                f"user {PG_OS_USER!r} missing: Postgres will not run as root; "
                f"create it with `useradd --system {PG_OS_USER}`"
            ) from None


def check_port_free(role: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Lets a port in TIME_WAIT pass, as the servers themselves bind with SO_REUSEADDR.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise PreflightError(f"cannot bind 127.0.0.1:{port} for {role}: {exc}") from exc
            env = _PORT_ENV.get(role, "the matching MIS_*_PORT")
            raise PreflightError(
                f"port {port} ({role}) is already in use: stop whatever listens there "
                f"(`ss -ltnp 'sport = :{port}'`) or set {env} to a free port"
            ) from None
