"""Small helpers the agents share: table (de)serialisation and key handling."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from streams.errors import PipelineError
from streams.topology import space_partition

S = TypeVar("S", bound=BaseModel)
log = logging.getLogger(__name__)
#: parks an event on the dead-letter topic with a reason (streams.deadletter.DeadLetters)
DeadLetter = Callable[[Any, str], Awaitable[None]]


def key_of(event: Any) -> str:
    key = event.key
    return key.decode() if isinstance(key, bytes) else str(key)


def parse(cls: type[S], raw: Any) -> S:
    if isinstance(raw, bytes | str):
        return cls.model_validate_json(raw)
    return cls.model_validate(raw)


def load(table: Any, key: str, cls: type[S]) -> S:
    """The state of ``key``; tables hold pydantic JSON as raw bytes."""
    raw = table.get(key.encode())
    return cls() if raw is None else parse(cls, raw)


async def guarded(
    event: Any, handler: Callable[[Any], Awaitable[None]], dead_letter: DeadLetter
) -> None:
    """Run ``handler`` on one event; whatever it raises sends the event to the dead letters.

    An exception escaping a Faust agent would crash it and the event would be acknowledged
    anyway, that is, lost. Parked with its reason, it can be inspected and replayed.
    """
    try:
        await handler(event)
    except Exception as exc:
        log.exception(
            "processing failed topic=%s partition=%s offset=%s",
            event.message.topic,
            event.message.partition,
            event.message.offset,
        )
        await dead_letter(event, f"processing failed: {type(exc).__name__}: {exc}")


class StateTooLarge(PipelineError):
    """A key's state would not fit in one changelog message."""


def save(table: Any, key: str, state: BaseModel, max_bytes: int | None = None) -> None:
    raw = state.model_dump_json().encode()
    if max_bytes is not None and len(raw) > max_bytes:
        raise StateTooLarge(f"its state would be {len(raw):,} bytes, over {max_bytes:,}")
    table[key.encode()] = raw


def keys_in_partition(table: Any, partition: int, space: str, partitions: int) -> list[str]:
    """The keys of key space ``space`` that ``table`` holds in ``partition``."""
    keys = []
    for raw_key in list(table.keys()):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if space_partition(space, key, partitions) == partition:
            keys.append(key)
    return keys
