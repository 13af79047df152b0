"""Waiting for the workers to work through a replay, and measuring what they did.

"Caught up" is read from the consumer group's committed offsets, as an operator would read lag:
first the replayed partitions reach their targets, then the internal topics are drained in
rounds (a routed change yields a subscription, which yields a part, which yields a snapshot),
until a round in which nothing but clock ticks was added. Faust commits every
``broker_commit_interval`` (2.8 s), so this moment is late by up to a few seconds per round; the
processing time is therefore also measured from the messages the workers produced meanwhile:
from the first to the last one (clock ticks aside), by their Kafka timestamps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams import topology
from streams.messages import Tick, encode
from streams.ops.kafka import TP, Kafka, Member
from streams.ops.terminal import Progress
from streams.topology import SINK_NAMES, sink_group

log = logging.getLogger(__name__)

# The clock agent's tick, as it is on the wire.
TICK = encode(Tick())


@dataclass
class Produced:
    """What the workers wrote to the internal topics during the replay, ticks aside."""

    messages: int = 0
    snapshots: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    @property
    def seconds(self) -> float | None:
        if self.first_ms is None or self.last_ms is None:
            return None
        return (self.last_ms - self.first_ms) / 1000.0


@dataclass
class Followed:
    caught_up: bool = False
    members: list[Member] = field(default_factory=list)
    joined_at: datetime | None = None
    caught_up_at: datetime | None = None
    joined_mono: float | None = None
    caught_up_mono: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.joined_mono is None or self.caught_up_mono is None:
            return None
        return self.caught_up_mono - self.joined_mono


def reached(
    committed: Mapping[TP, int], targets: Mapping[TP, int], floor: Mapping[TP, int]
) -> bool:
    """Whether every partition's committed offset is at or past its target.

    A partition the group never committed counts as being at ``floor`` (its earliest offset),
    which is where a new consumer starts.
    """
    return all(committed.get(tp, floor.get(tp, 0)) >= target for tp, target in targets.items())


def progress_of(committed: Mapping[TP, int], sources: Mapping[TP, tuple[int, int]]) -> int:
    done = 0
    for tp, (start, target) in sources.items():
        done += min(max(committed.get(tp, start) - start, 0), target - start)
    return done


def pipeline_committed(kafka: Kafka, group: str) -> dict[TP, int]:
    """The pipeline's committed offsets: the Faust group's, the gatherers' on the topics they
    read, and on the snapshot topic, which the
    sinks follow with groups of their own, the least of the sinks' (a partition some sink never
    committed is left out)."""
    snapshots = topology.snapshot_topic(group)
    committed = {tp: o for tp, o in kafka.committed(group).items() if tp[0] != snapshots}
    # The gatherers read their topics with a group of their own (streams.runtime.gatherer).
    committed.update(kafka.committed(topology.gather_group(group)))
    sinks = [kafka.committed(sink_group(group, name)) for name in SINK_NAMES]
    for tp in set(sinks[0]).intersection(*sinks[1:]):
        if tp[0] == snapshots:
            committed[tp] = min(c[tp] for c in sinks)
    return committed


def follow(
    kafka: Kafka,
    group: str,
    sources: Mapping[TP, tuple[int, int]],
    internal: Mapping[TP, int],
    quiet: set[str],
    progress: Progress,
    timeout_s: float,
    poll_s: float = 0.5,
) -> Followed:
    """Wait until the group has consumed ``sources`` and drained the ``internal`` partitions.

    ``sources``: partition -> (first offset replayed, offset to reach). ``internal``: partition
    -> its earliest offset. ``quiet``: the internal topics that only the replay's consequences
    write to (every internal topic but the one the clock ticks into).
    """
    result = Followed()
    total = sum(target - start for start, target in sources.values())
    targets = {tp: target for tp, (_, target) in sources.items()}
    deadline = time.monotonic() + timeout_s
    drain_ends: dict[TP, int] | None = None
    note = "waiting for workers to join the group (start them with `mis worker`)"
    progress.update(0, note, force=True)
    while time.monotonic() < deadline:
        if result.joined_mono is None:
            members = kafka.members(group)
            if members:
                result.members = members
                result.joined_mono = time.monotonic()
                result.joined_at = datetime.now(UTC)
                progress.say(f"workers joined: {', '.join(map(str, members))}")
                note = "replaying"
        committed = pipeline_committed(kafka, group)
        done = progress_of(committed, sources)
        if drain_ends is None and reached(committed, targets, {}):
            drain_ends = {tp: high for tp, (_, high) in kafka.watermarks(internal).items()}
            note = "draining the key-space topics"
        if drain_ends is not None and reached(committed, drain_ends, internal):
            again = kafka.watermarks(tp for tp in internal if tp[0] in quiet)
            if all(high == drain_ends[tp] for tp, (_, high) in again.items()):
                result.caught_up = True
                result.caught_up_mono = time.monotonic()
                result.caught_up_at = datetime.now(UTC)
                if result.joined_mono is None:  # nothing to replay, no worker needed
                    result.joined_mono = result.caught_up_mono
                    result.joined_at = result.caught_up_at
                break
            drain_ends = {tp: high for tp, (_, high) in kafka.watermarks(internal).items()}
        progress.update(done, note)
        time.sleep(poll_s)
    progress.close(
        progress_of(pipeline_committed(kafka, group), sources),
        "caught up" if result.caught_up else f"not caught up after {timeout_s:.0f}s",
    )
    log.info("follow group=%s caught_up=%s events=%d", group, result.caught_up, total)
    return result


def produced(kafka: Kafka, since: Mapping[TP, int], snapshots_topic: str) -> Produced:
    """Count the non-tick messages written to the given partitions from the given offsets on."""
    ends = kafka.watermarks(since)
    ranges = {tp: (start, ends[tp][1]) for tp, start in since.items()}
    out = Produced()
    for msg in kafka.read(ranges):
        if msg.value == TICK:
            continue
        out.messages += 1
        if msg.topic == snapshots_topic:
            out.snapshots += 1
        ts = msg.timestamp_ms
        out.first_ms = ts if out.first_ms is None else min(out.first_ms, ts)
        out.last_ms = ts if out.last_ms is None else max(out.last_ms, ts)
    return out
