"""Stand-ins for what a batch of an agent touches of Faust (streams.agents.batch): an event with
its message's place, and a table's store that counts its writes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Message:
    partition: int = 0
    topic: str = "by-test"
    offset: int = 0


@dataclass
class Event:
    message: Message = field(default_factory=Message)


class Table(dict[bytes, bytes]):
    """The key-value store of a table: a dict that counts the writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append(key)
        super().__setitem__(key, value)
