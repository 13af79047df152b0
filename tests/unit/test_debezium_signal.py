"""The execute-snapshot signal that ``mis backfill`` and the API's reconcile both send."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from psycopg import sql

from streams.debezium_signal import (
    declared_signal_table,
    execute_snapshot_data,
    insert_execute_snapshot,
)
from streams.errors import PipelineError


def test_whole_tables_carry_no_conditions() -> None:
    whole = json.loads(execute_snapshot_data(["public.certificates"]))
    assert whole == {"type": "incremental", "data-collections": ["public.certificates"]}


def test_a_condition_reads_only_matching_rows_of_its_table() -> None:
    some = json.loads(
        execute_snapshot_data(
            ["public.storage_bookings"], [("public.storage_bookings", "farmer_id = 'f'")]
        )
    )
    assert some["data-collections"] == ["public.storage_bookings"]
    (condition,) = some["additional-conditions"]
    assert condition["filter"] == "farmer_id = 'f'"
    # Debezium compiles data-collection as a regular expression: the dot must be literal.
    assert re.fullmatch(condition["data-collection"], "public.storage_bookings")
    assert not re.fullmatch(condition["data-collection"], "public_storage_bookings")


def test_the_insert_names_the_signal_table_and_its_type() -> None:
    statement = insert_execute_snapshot("public.debezium_signal")
    assert statement == sql.Composed(
        [
            sql.SQL("INSERT INTO "),
            sql.Identifier("public", "debezium_signal"),
            sql.SQL(" (id, type, data) VALUES (%s, "),
            sql.Literal("execute-snapshot"),
            sql.SQL(", %s)"),
        ]
    )


def test_the_signal_table_is_the_one_the_connector_json_declares(tmp_path: Path) -> None:
    assert declared_signal_table("storage_guard-source") == "public.debezium_signal"
    (tmp_path / "a.json").write_text(
        json.dumps({"name": "a", "config": {"signal.data.collection": "ops.signals"}})
    )
    assert declared_signal_table("a", tmp_path) == "ops.signals"
    with pytest.raises(PipelineError, match=r"signal\.data\.collection for b"):
        declared_signal_table("b", tmp_path)
