"""The dead-letter topic: what could not be processed, why, and where it came from."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

from streams import metrics

log = logging.getLogger(__name__)


def _text(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {"text": None}
    try:
        return {"text": raw.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def dead_letter_record(
    reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> dict[str, Any]:
    """The dead-letter topic's value: why, where from, and the message itself."""
    return {
        "reason": reason,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": _text(key),
        "value": _text(value),
        "failed_at": datetime.now(UTC).isoformat(),
    }


def parked(
    reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> bytes:
    """Log and count a message going to the dead letters; the dead-letter topic's value."""
    log.warning(
        "dead letter topic=%s partition=%s offset=%s reason=%s", topic, partition, offset, reason
    )
    metrics.DEAD_LETTERS.labels(topic=topic).inc()
    record = dead_letter_record(reason, topic, partition, offset, key, value)
    return json.dumps(record).encode()


class DeadLetters:
    """Parks what could not be processed on the dead-letter topic; the stream goes on."""

    def __init__(self, topic: Any) -> None:
        self._topic = topic

    async def __call__(self, event: Any, reason: str) -> None:
        """Park ``event`` (a faust Event) with ``reason``."""
        msg = event.message
        value = parked(reason, msg.topic, msg.partition, msg.offset, msg.key, msg.value)
        await self._topic.send(key=msg.key, value=value)
