"""Debezium's ``execute-snapshot`` signal: the row that makes the connector re-read tables.

An ``execute-snapshot`` signal of type ``incremental``, inserted into the connector's signal
table (``signal.data.collection``), makes Debezium read the listed tables, or only their rows
matching ``additional-conditions``, in chunks while streaming goes on. ``mis backfill`` (which
reads the signal table from the running connector's configuration) and the API's reconcile (from
the connector's JSON in connectors/) both send one; this module builds the row and its statement
and sends nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg import sql

from streams.config import REPO_ROOT
from streams.errors import PipelineError

CONNECTORS_DIR = REPO_ROOT / "connectors"

SIGNAL_TABLE = "signal.data.collection"  # the connector's setting that names the signal table
EXECUTE_SNAPSHOT = "execute-snapshot"


def execute_snapshot_data(
    collections: Sequence[str], conditions: Sequence[tuple[str, str]] = ()
) -> str:
    """The ``data`` of an incremental execute-snapshot signal: the tables, and per table filter.

    ``conditions`` are (``schema.table``, SQL filter) pairs; a table without one is read whole.
    """
    data: dict[str, Any] = {"type": "incremental", "data-collections": list(collections)}
    if conditions:
        # Debezium compiles each data-collection of a condition as a regular expression.
        data["additional-conditions"] = [
            {"data-collection": re.escape(collection), "filter": where}
            for collection, where in conditions
        ]
    return json.dumps(data, separators=(",", ":"))


def declared_configs(directory: Path = CONNECTORS_DIR) -> dict[str, dict[str, str]]:
    """Each connector's configuration as connectors/*.json declares it, by name."""
    configs = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        configs[str(doc["name"])] = {str(k): str(v) for k, v in doc["config"].items()}
    return configs


def declared_signal_table(connector: str, directory: Path = CONNECTORS_DIR) -> str:
    """The ``schema.table`` the connector's JSON in ``directory`` reads signals from."""
    table = declared_configs(directory).get(connector, {}).get(SIGNAL_TABLE)
    if not table:
        raise PipelineError(f"no {directory}/*.json declares {SIGNAL_TABLE} for {connector}")
    return table


def insert_execute_snapshot(table: str) -> sql.Composed:
    """The INSERT of an execute-snapshot signal into ``table``; parameters (id, data)."""
    schema, name = table.split(".", 1)
    return sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, {}, %s)").format(
        sql.Identifier(schema, name), sql.Literal(EXECUTE_SNAPSHOT)
    )
