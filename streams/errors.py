"""One error root for the pipeline."""


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class BadEvent(PipelineError):
    """A message that cannot be understood; it goes to the dead-letter topic with this reason."""


class SinkUnavailable(PipelineError):
    """A sink could not be written to; the write is retried with capped backoff."""


class SinkRejected(PipelineError):
    """A sink refused a write for what it contains; the snapshot goes to the dead letters."""
