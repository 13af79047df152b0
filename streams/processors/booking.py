"""The booking key space as a processor (see streams.processors): where the parts meet and the
snapshot is built.

A booking subscribes to the keys its row names (location, vendor, inspection), takes their
answers, and emits its snapshot conflated (streams.conflate): at most one per window, evaluated
when the window ends, so under a storm the snapshot rate is bounded by bookings / window. The
parts' content is read, when the booking is evaluated, from its partition's shelf
(streams.state.Shelf); the booking's state holds only its links to them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from streams import conflate
from streams.builder import SharedViews
from streams.messages import BookingChanged, Truncated, encode
from streams.processors.step import SNAPSHOTS, Out, Step
from streams.state import BookingState, Command, Part, PartOf, Space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BookingProcessor:
    partitions: int
    window: timedelta
    #: a finished booking is evicted this long after the commit that finished it
    retention: timedelta
    #: a part asked for and not answered within this long is asked for again (a subscription
    #: lost with a worker that died before its producer delivered it)
    ask_again_after: timedelta

    def new(self) -> BookingState:
        return BookingState()

    def _commands(self, commands: list[Command]) -> list[Out]:
        return [
            Out.to_key(space, fk, encode(command), self.partitions)
            for space, fk, command in commands
        ]

    def changed(self, state: BookingState, now: datetime) -> None:
        """Something the snapshot depends on changed at ``now``: open the window."""
        conflate.mark(state.outbox, now, self.window)

    def truncate(self, state: BookingState, msg: Truncated, now: datetime) -> bool:
        if state.truncate(msg):
            self.changed(state, now)
            return True
        return False

    def booking(self, key: str, state: BookingState, msg: BookingChanged, now: datetime) -> Step:
        """A change of the booking's row: the subscriptions it changes go out at once."""
        known = state.booking_version
        step = Step(messages=self._commands(state.apply_booking(msg, now)))
        if state.booking_version != known:  # else a duplicate or an older change
            self.changed(state, now)
        return step

    def part(self, state: BookingState, space: Space, part: Part, now: datetime) -> bool:
        """An answer of ``space`` reached the booking; True when it counts."""
        if state.apply_part(space, part):
            self.changed(state, now)
            return True
        return False

    def evict(self, key: str, state: BookingState) -> Step:
        """Evict a finished booking: unsubscribe it, drop its state, tombstone its snapshot
        (upon which the sinks delete its row and listing). A live booking is not evicted."""
        if state.booking is None:
            # Evicted before, its tombstone lost with a worker: the partition knows nothing of
            # the booking any more, so its snapshot has no business downstream either.
            return Step(messages=[Out(SNAPSHOTS, key, None)])
        if not state.terminal:
            log.info("evict ignored: booking is live booking_id=%s", key)
            return Step()
        messages = self._commands(state.evict(key))
        messages.append(Out(SNAPSHOTS, key, None))
        return Step(messages=messages, evaluated=True, drop=True)

    def flush(
        self,
        key: str,
        state: BookingState,
        parts: PartOf,
        now: datetime,
        *,
        owed_again: bool,
        views: SharedViews | None = None,
    ) -> Step:
        """Evaluate the booking if its window has passed, and emit its snapshot if the content
        changed, or if ``owed_again`` (its last send failed or is unknown to this worker).
        ``views``: what the bookings flushed at ``now`` share of their parts (computed once).
        A booking whose retention has passed is evicted instead; one whose part is missing
        from the shelf, or unanswered too long, asks for it again."""
        outbox = state.outbox
        if not conflate.is_due(outbox, now):
            return Step(due=outbox.due)
        outbox.due = None
        if state.expired(now, self.retention):
            return self.evict(key, state)
        if owed_again:
            state.last_hash = None
        step = Step(evaluated=True)
        again = state.missing(parts) + state.unanswered(now, self.ask_again_after)
        if again:
            log.info("booking asks for its parts again booking_id=%s parts=%s", key, again)
            step.messages += self._commands(state.ask_again(key, again, now))
        record = state.evaluate(now, parts, views)
        step.wake_at = state.wake_at(self.retention, self.ask_again_after)
        if record is not None:
            step.messages.append(Out(SNAPSHOTS, key, record.model_dump_json().encode()))
            conflate.sent(outbox, now)
        return step
