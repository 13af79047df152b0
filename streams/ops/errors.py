"""What the operations refuse or fail at; all of it is a PipelineError."""

from __future__ import annotations

from streams.errors import PipelineError


class OpsError(PipelineError):
    """An operation could not be carried out; the message says what to do about it."""


class WorkersRunning(OpsError):
    """The pipeline's consumer group has active members, so its offsets cannot be moved."""


class BackfillFailed(OpsError):
    """Debezium aborted or did not finish an incremental snapshot."""
