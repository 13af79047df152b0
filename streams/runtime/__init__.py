"""The Faust runtime of the pipeline: one app, built from Settings by ``build``.

Nothing here does I/O or builds an app at import. ``build(settings)`` makes the app
(streams.runtime.app), declares its topics and tables from streams.topology
(streams.runtime.topics, streams.runtime.tables), and registers on it the agents, timers and
tasks (streams.agents) and, for a worker, the HTTP API (streams.web). Every use of a private
Faust or aiokafka name is in this package (streams.runtime.faustfix, streams.runtime.internals)
and is checked against the installed versions before an app is built (streams.runtime.compat).

``mis worker`` runs ``build(settings).app.main()``; a command that only sends to the pipeline's
topics builds a runtime without agents (``agents=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust

from streams.config import Settings
from streams.deadletter import DeadLetters
from streams.pace import Pace
from streams.runtime.app import create_app
from streams.runtime.tables import Tables
from streams.runtime.topics import Topics


@dataclass
class Runtime:
    settings: Settings
    app: faust.App
    topics: Topics
    tables: Tables
    dead_letter: DeadLetters
    #: the conflation window of this worker's agents, widened while it is behind
    pace: Pace
    #: what streams.agents registered, by name (for the API and the tests)
    parts: dict[str, Any] = field(default_factory=dict)


def build(settings: Settings, *, agents: bool = True, web: bool = False) -> Runtime:
    """The app of ``settings``, its topics and tables; with ``agents`` the agents, timers and
    tasks of a worker, with ``web`` the HTTP API on the worker's web server."""
    app = create_app(settings)
    topics = Topics(app, settings)
    pace = Pace(
        base=settings.conflate_window_s,
        widest=max(settings.conflate_window_s, settings.conflate_max_window_s),
        backlog_widest=settings.conflate_backlog_window_s,
    )
    rt = Runtime(
        settings, app, topics, Tables(app, settings), DeadLetters(topics.dead_letters), pace
    )
    if agents:
        from streams.agents import register

        register(rt)
    if web:
        from streams.web import install

        install(rt)
    return rt
