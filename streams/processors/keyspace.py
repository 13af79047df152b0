"""The foreign key spaces (location, vendor, inspection) as processors (see streams.processors).

Each key keeps its rows and its subscribers, and answers with its *part*: to a new subscriber
at the end of the batch that brought its subscription, and to every subscriber after a change,
conflated (streams.conflate): at most one answer per key per window, with the newest content,
never later than the window after the first change it reflects. An answer is one message per
destination booking partition, naming the subscribers of that partition, not one per booking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from streams import conflate
from streams.builder import PEST_WINDOW
from streams.errors import PipelineError
from streams.messages import (
    CertificateChanged,
    InspectionChanged,
    LocationPart,
    PestChanged,
    ReadingChanged,
    Subscribe,
    Unsubscribe,
    encode,
)
from streams.processors.step import Out, Step
from streams.state import InspectionState, KeyState, LocationState, VendorState
from streams.topology import space_partition

# Pest detections may fill this share of a location's part; the rest stays free for readings
# (a reading from a new sensor still gets through where detections have piled up).
PEST_SHARE = 0.75


class PartTooLarge(PipelineError):
    """A key's part would not fit in one message."""


def grouped(subscribers: Iterable[str], partitions: int) -> dict[int, list[str]]:
    """Subscribers by the booking partition their messages go to."""
    by_partition: dict[int, list[str]] = {}
    for booking_id in subscribers:
        partition = space_partition("booking", booking_id, partitions)
        by_partition.setdefault(partition, []).append(booking_id)
    return by_partition


@dataclass(frozen=True)
class KeySpaceProcessor:
    space: str
    cls: type[KeyState]
    partitions: int
    window: timedelta
    max_part_bytes: int
    reading_history: int

    def new(self) -> KeyState:
        return self.cls()

    def truncate(self, state: KeyState, table: str, version: str, now: datetime) -> bool:
        """A TRUNCATE of ``table`` at ``version``; True when it changed the key's rows."""
        if state.truncate(table, version):
            conflate.mark(state.outbox, now, self.window)
            return True
        return False

    def apply(self, state: KeyState, msg: Any, now: datetime) -> bool:
        """Apply one message for the key; True when its rows changed."""
        fresh = state.outbox.fresh
        if isinstance(msg, Subscribe | Unsubscribe):
            if state.subscribe(msg):
                if msg.booking_id not in fresh:
                    fresh.append(msg.booking_id)
            elif msg.booking_id in fresh:
                fresh.remove(msg.booking_id)
            return False
        if self._apply_row(state, msg, now):
            conflate.mark(state.outbox, now, self.window)
            return True
        return False

    def _apply_row(self, state: KeyState, msg: Any, now: datetime) -> bool:
        if isinstance(msg, ReadingChanged) and isinstance(state, LocationState):
            return state.apply_reading(msg, history=self.reading_history)
        if isinstance(msg, PestChanged) and isinstance(state, LocationState):
            return state.apply_pest(msg, now=now)
        if isinstance(msg, CertificateChanged) and isinstance(state, VendorState):
            return state.apply_certificate(msg)
        if isinstance(msg, InspectionChanged) and isinstance(state, InspectionState):
            return state.apply_inspection(msg)
        raise TypeError(f"{type(msg).__name__} does not belong to {type(state).__name__}")

    def part_of(self, state: KeyState, key: str, now: datetime) -> BaseModel:
        """What the bookings need of the key: pests outside the window never reach a
        snapshot."""
        part: BaseModel = state.part(key)  # type: ignore[attr-defined]
        if isinstance(part, LocationPart):
            horizon = now - PEST_WINDOW
            pests = [p for p in part.pests if p.detected_at >= horizon]
            part = part.model_copy(update={"pests": pests})
        return part

    def fits(
        self, key: str, state: KeyState, now: datetime, *, with_state: bool = False
    ) -> BaseModel:
        """The key's part, if it (and the state) are within their bounds; PartTooLarge if not.
        The state's own bound is otherwise checked as it is stored (agents.common.save)."""
        part = self.part_of(state, key, now)
        limit = self.max_part_bytes
        size = len(encode(part))
        if size > limit:
            raise PartTooLarge(
                f"its part would be {size:,} bytes, over MIS_MAX_PART_BYTES={limit:,}"
            )
        if isinstance(part, LocationPart) and size > PEST_SHARE * limit:
            pests = size - len(encode(part.model_copy(update={"pests": []})))
            if pests > PEST_SHARE * limit:
                raise PartTooLarge(
                    f"its pest detections in the window would take {pests:,} bytes of its part, "
                    f"over {PEST_SHARE:.0%} of MIS_MAX_PART_BYTES={limit:,}"
                )
        size = len(encode(state)) if with_state else 0
        if size > 2 * limit:
            raise PartTooLarge(
                f"its state would be {size:,} bytes, over twice MIS_MAX_PART_BYTES={limit:,}"
            )
        return part

    def flush(self, key: str, state: KeyState, now: datetime, *, changed: bool) -> Step:
        """Answer the subscribers owed an answer: every subscriber when the key's window has
        passed, else the fresh ones. ``changed``: the key's rows changed in this batch (its
        part is then checked against its bound even with nobody to answer).
        PartTooLarge refuses the batch's changes of the key."""
        outbox = state.outbox
        due = conflate.is_due(outbox, now)
        targets = state.listeners() if due else [b for b in outbox.fresh if state.listens(b)]
        step = Step()
        if targets or changed:
            part = self.fits(key, state, now)
            for partition, ids in grouped(targets, self.partitions).items():
                value = encode(part.model_copy(update={"bookings": ids}))
                step.messages.append(Out("booking", key, value, partition))
        if due:
            conflate.sent(outbox, now)
        else:
            outbox.fresh = []
        step.due = outbox.due
        return step

    def retry(
        self, key: str, stored: KeyState, messages: Sequence[Any], now: datetime
    ) -> tuple[KeyState, list[tuple[int, str]]]:
        """The key's messages failed together: apply them one by one to its stored state and
        keep each that leaves the part and the state within their bounds. Returns the state
        and, for each message refused, its index and the reason."""
        state, refused = stored, []
        for i, msg in enumerate(messages):
            trial = state.model_copy(deep=True)
            self.apply(trial, msg, now)
            try:
                self.fits(key, trial, now, with_state=True)
            except PipelineError as exc:
                refused.append((i, str(exc)))
                continue
            state = trial
        return state, refused
