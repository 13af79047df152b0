"""The dead-letter topic: what could not be processed, why, and where it came from."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

from streams import metrics, topics

log = logging.getLogger(__name__)


def _text(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {"text": None}
    try:
        return {"text": raw.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


async def dead_letter(event: Any, reason: str) -> None:
    """Park ``event`` (a faust Event) on the dead-letter topic; the stream goes on."""
    msg = event.message
    log.warning(
        "dead letter topic=%s partition=%s offset=%s reason=%s",
        msg.topic,
        msg.partition,
        msg.offset,
        reason,
    )
    record = {
        "reason": reason,
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "key": _text(msg.key),
        "value": _text(msg.value),
        "failed_at": datetime.now(UTC).isoformat(),
    }
    metrics.DEAD_LETTERS.labels(topic=msg.topic).inc()
    await topics.dead_letters.send(key=msg.key, value=json.dumps(record).encode())
