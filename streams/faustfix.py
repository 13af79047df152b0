"""A fix for faust-streaming 0.15.3: seek the stream partitions before resuming them.

After a table recovery, ``Recovery.on_recovery_completed`` resumes the stream partitions and
only then seeks them to their committed offsets, while the flow (resumed for the recovery)
already lets the fetcher deliver. Messages fetched in between are processed, then fetched again
after the seek; when the fetcher records its read offset after the seek has reset it, the
re-fetched messages are dropped unacknowledged: the partition's commits stop for good (a gap
Faust never fills), and a message dropped from the first pass as well is lost. Earlier Faust
versions seeked first; faust-streaming #216/#217 restored that order in ``_resume_streams`` but
not here. Seen on this pipeline as a by-* partition whose committed offset never moved again and
as a key-space change that never reached its table after a restart.

The method below is Faust's own (BSD licence), with the seek moved before the resume.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.recovery import Recovery

from streams import compat

_applied = False


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        # Still paused: nothing is fetched from the old position while this runs.
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


def apply() -> None:
    """Install the fix (idempotent); streams.app calls it before building the app."""
    global _applied
    if not _applied:
        compat.check()
        Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
        _applied = True
