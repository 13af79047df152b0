"""Small helpers the agents share: table (de)serialisation and key handling."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

S = TypeVar("S", bound=BaseModel)


def key_of(event: Any) -> str:
    key = event.key
    return key.decode() if isinstance(key, bytes) else str(key)


def load(table: Any, key: str, cls: type[S]) -> S:
    raw = table.get(key)
    return cls.model_validate_json(raw) if raw else cls()


def save(table: Any, key: str, state: BaseModel) -> None:
    table[key] = state.model_dump_json().encode()
