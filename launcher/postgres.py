"""Postgres 15: a throwaway cluster with logical decoding, the source database and its schema."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import LiteralString, cast

import psycopg
from psycopg import sql

from launcher.component import Component
from launcher.errors import StartError, TeardownError
from launcher.paths import SQL_DIR

log = logging.getLogger(__name__)

PG_BINDIR = Path(os.environ.get("MIS_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
#: initdb and postgres refuse to run as root; as root the cluster belongs to this user.
PG_OS_USER = "postgres"


def _conf(port: int) -> str:
    return f"""\
# Written by the launcher for a throwaway development cluster.
listen_addresses = '127.0.0.1'
port = {port}
# TCP only: a socket path under a deep checkout can exceed the 107-byte limit.
unix_socket_directories = ''
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
# An idle connector's slot must not pin WAL without bound.
max_slot_wal_keep_size = '1GB'
# Nothing here has to survive a power cut.
fsync = off
full_page_writes = off
log_line_prefix = '%m [%p] '
log_min_messages = warning
"""


class Postgres(Component):
    name = "postgres"
    stop_signal = signal.SIGINT
    start_timeout_s = 60.0

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.user = PG_OS_USER if os.geteuid() == 0 else None

    @property
    def port(self) -> int:
        return self.settings.pg_port

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def prepare(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        (self.data / "mis.conf").write_text(_conf(self.port))
        self._chown(self.data / "mis.conf")

    def _initdb(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self._let_postgres_through()
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.settings.pg_password.get_secret_value() + "\n")
        pwfile.chmod(0o600)
        self._chown(self.directory, recursive=True)
        argv = [
            str(PG_BINDIR / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.settings.pg_user,
            f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise StartError(f"initdb failed: {last[0]}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude 'mis.conf'\n")

    def _let_postgres_through(self) -> None:
        """Give others the search (x) bit on ancestors that lack it, so the postgres user can
        reach its data directory: a checkout under a 0700 directory (mktemp -d, a home
        directory) would otherwise make initdb fail with "Permission denied". No read bit is
        added: nobody can list those directories."""
        if self.user is None:
            return
        for parent in reversed(self.directory.parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                log.info(
                    "postgres: adding o+x to %s so the postgres user can reach its data", parent
                )
                parent.chmod(mode | stat.S_IXOTH)

    def _chown(self, path: Path, *, recursive: bool = False) -> None:
        if self.user is None:
            return
        targets = [path, *path.rglob("*")] if recursive else [path]
        for target in targets:
            shutil.chown(target, self.user, self.user)

    def argv(self) -> list[str]:
        return [str(PG_BINDIR / "postgres"), "-D", str(self.data)]

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        s = self.settings
        return psycopg.connect(
            host=s.pg_host,
            port=s.pg_port,
            user=s.pg_user,
            password=s.pg_password.get_secret_value(),
            dbname=dbname or s.pg_database,
            connect_timeout=3,
            autocommit=True,
        )

    def probe(self) -> str | None:
        try:
            with self.connect("postgres") as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None

    def after_healthy(self) -> None:
        with self.connect("postgres") as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.pg_database,)
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.settings.pg_database))
                )
        apply_schema(self)


def apply_schema(pg: Postgres) -> None:
    files = sorted(SQL_DIR.glob("*.sql"))
    with pg.connect() as conn:
        for path in files:
            try:
                # No parameters: psycopg sends the file as one simple query, many statements.
                conn.execute(cast(LiteralString, path.read_text()))
            except psycopg.Error as exc:
                raise StartError(f"schema file {path.name} failed: {exc}".splitlines()[0]) from exc
    log.info("postgres: applied %d schema files to %s", len(files), pg.settings.pg_database)


def drop_replication(pg: Postgres, *, slots: list[str], publications: list[str]) -> None:
    """Remove what Debezium left in Postgres, so the slot cannot pin WAL after the stack is gone."""
    with pg.connect() as conn:
        for slot in slots:
            _drop_slot(conn, slot)
        for pub in publications:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub)))
    log.info("postgres: dropped slots=%s publications=%s", slots, publications)


def _drop_slot(conn: psycopg.Connection, slot: str, attempts: int = 50) -> None:
    for _ in range(attempts):
        # A slot in use cannot be dropped: end the walsender still holding it first.
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (slot,),
        )
        try:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.1)  # the terminated walsender has not released the slot yet
    raise TeardownError(f"replication slot {slot} is still in use; drop it by hand")
