"""Every private Faust and aiokafka interface the pipeline relies on, checked at start-up.

The pipeline reaches past the public API of faust-streaming and aiokafka in a few places, each
for a reason given where it is used:

- ``streams.runtime.faustfix``: replaces ``faust.tables.recovery.Recovery.on_recovery_completed``,
  ``faust.transport.consumer.Consumer.perform_seek``,
  ``faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._fetch_records``,
  ``faust.transport.producer.ProducerBuffer.flush`` (calling its ``flush_atmost``),
  ``Consumer._add_gap``, ``Consumer.getmany`` (calling ``Consumer.seek_wait``) and
  ``Consumer._new_offset`` (reading ``_acked`` and ``_gap``), ``Consumer.wait_first``
  (reading ``suspend_flow``, ``ProducerBuffer.max_messages`` and the conductor's
  ``_topic_name_index``), and calls
  ``Recovery._set_recovery_ended``, ``Recovery._wait``, ``Recovery._is_changelog_tp``,
  ``App._fetcher`` and the consumer's ``_read_offset``;
- ``streams.runtime.stalls``: reads the consumer's offsets and partition sets (``_read_offset``,
  ``_committed_offset``, ``_acked``, ``_gap``, ``_active_partitions``, ``_paused_partitions``,
  ``_buffered_partitions``) and puts a stalled partition back among the active ones
  (``Consumer._get_active_partitions``), and reads aiokafka's fetch state of it where it can;
- ``streams.runtime.app``: gives the app a ``faust.sensors.monitor.Monitor`` subclass;
- ``streams.runtime.internals``: sets ``faust.streams._current_event``, the context variable
  the table stores read the current event's partition from (for streams.agents.batch), and
  reads the consumer's ``_committed_offset`` (for the lag gauge, streams.api.lag).

Those names are not promised to survive a release. ``check()`` runs before the worker builds
its app: on a version this code was not written for, or when one of the names has gone, it
refuses to start with a message saying what to do, instead of misbehaving quietly (a lag gauge
that stays empty, a recovery that processes messages twice).
"""

from __future__ import annotations

from importlib import metadata

from streams.errors import PipelineError

# The versions the private uses above were written against and tested with.
SUPPORTED = {"faust-streaming": ("0.15.",), "aiokafka": ("0.14.",)}


class IncompatibleRuntime(PipelineError):
    """An installed Faust or aiokafka the pipeline was not written for."""


def _missing() -> list[str]:
    import faust.streams
    from faust.tables.recovery import Recovery
    from faust.transport import consumer
    from faust.transport.conductor import Conductor
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
    from faust.transport.producer import ProducerBuffer

    missing = []
    for klass, name in (
        (consumer.Consumer, "perform_seek"),
        (consumer.Consumer, "seek_wait"),
        (consumer.Consumer, "earliest_offsets"),
        (consumer.Consumer, "_add_gap"),
        (consumer.Consumer, "getmany"),
        (consumer.Consumer, "_get_active_partitions"),
        (consumer.Consumer, "_new_offset"),
        (AIOKafkaConsumerThread, "_fetch_records"),
        (AIOKafkaConsumerThread, "_create_worker_consumer"),
        (ProducerBuffer, "flush"),
        (ProducerBuffer, "flush_atmost"),
        (ProducerBuffer, "size"),
        (ProducerBuffer, "max_messages"),
        (consumer.Consumer, "wait_first"),
    ):
        if not hasattr(klass, name):
            missing.append(f"{klass.__module__}.{klass.__qualname__}.{name}")
    for name in ("on_recovery_completed", "_set_recovery_ended", "_wait", "_is_changelog_tp"):
        if not hasattr(Recovery, name):
            missing.append(f"faust.tables.recovery.Recovery.{name}")
    if not hasattr(faust.streams, "_current_event"):
        missing.append("faust.streams._current_event")
    for attribute in (
        "_committed_offset",
        "_read_offset",
        "_acked",
        "_gap",
        "_active_partitions",
        "_paused_partitions",
        "_buffered_partitions",
        "suspend_flow",
    ):
        if attribute not in _attributes_set_by(Consumer):
            missing.append(f"faust consumer attribute {attribute}")
    if "_topic_name_index" not in _attributes_set_by(Conductor):
        missing.append("faust conductor attribute _topic_name_index")
    return missing


def _attributes_set_by(cls: type) -> set[str]:
    """Names the class hierarchy's __init__ and _reset_state methods assign to ``self`` (read
    from the source)."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        for method in ("__init__", "_reset_state"):
            function = klass.__dict__.get(method)
            if function is None:
                continue
            try:
                source = inspect.getsource(function)
            except (OSError, TypeError):
                continue
            names |= {
                part.split("=")[0].strip().split(":")[0].strip()[len("self.") :]
                for part in source.splitlines()
                if part.strip().startswith("self.") and "=" in part
            }
    return names


def check() -> None:
    """Refuse to go on with versions or internals the pipeline was not written for."""
    problems = []
    for package, prefixes in SUPPORTED.items():
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed")
            continue
        if not version.startswith(prefixes):
            problems.append(f"{package} {version} (written for {' or '.join(prefixes)}x)")
    if not problems:
        problems = [f"{name} is gone" for name in _missing()]
    if problems:
        raise IncompatibleRuntime(
            "the installed Faust/aiokafka differ from what this pipeline's fixes of their "
            f"internals were written for: {'; '.join(problems)}. Install the versions pinned in "
            "pyproject.toml (make install), or review streams/runtime/compat.py's list of "
            "private uses against the new release and extend SUPPORTED."
        )
    from aiokafka.codec import has_snappy

    if not has_snappy():
        raise IncompatibleRuntime(
            "aiokafka cannot compress with snappy (the workers' producer does, "
            "streams.runtime.app): "
            "cramjam is not installed. Install the versions pinned in pyproject.toml "
            "(make install)."
        )
