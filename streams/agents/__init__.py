"""The Faust adapters of the pipeline: each module's ``register(rt)`` adds its agents, timers
or tasks to a runtime's app (streams.runtime.build)."""

from __future__ import annotations

from streams.runtime import Runtime


def register(rt: Runtime) -> None:
    from streams.agents import bookings, gathering, keyspaces, lifecycle, timers, worker_sinks

    rt.parts["keyspaces"] = keyspaces.register(rt)
    rt.parts["bookings"] = bookings.register(rt)
    rt.parts["sinks"] = worker_sinks.register(rt)
    rt.parts["gatherer"] = gathering.register(rt)
    timers.register(rt)
    lifecycle.register(rt)
