"""The HTTP API on the worker's own web server (Faust's aiohttp application).

Installed by streams.runtime.build (``web=True``). Routes and middleware are added to the
aiohttp application before the worker starts it; the shared resources (a Postgres pool, MongoDB
clients) are created here but connect lazily, inside the worker's event loop, on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from aiohttp import web
from faust.web.drivers.aiohttp import Web

from streams.api.auth import Guard
from streams.api.handlers import API, Api, routes
from streams.api.health import Health
from streams.api.jobs import Jobs
from streams.api.live import LIVE, Live
from streams.api.middleware import api_middleware
from streams.api.publishing import Publishing
from streams.api.store import Store
from streams.debezium_signal import declared_signal_table
from streams.runtime import Runtime


def install(rt: Runtime) -> Api:
    """The API on the web server of ``rt``'s app."""
    settings, faust_app = rt.settings, rt.app
    web_app = cast(Web, faust_app.web).web_app
    sinks = rt.parts.get("sinks")

    def sink_metrics() -> list[Path]:
        return [] if sinks is None else sinks.metrics_files()

    guard = Guard.from_settings(settings)  # a broken token entry stops the worker here
    signals = declared_signal_table(settings.connector_name)
    store = Store(settings.pg_dsn, settings.api_timeout_s, signals)
    api = Api(
        settings=settings,
        store=store,
        publishing=Publishing(settings, store),
        health=Health(settings, store, faust_app),
        faust_app=faust_app,
        jobs=Jobs(),
        sink_metrics=sink_metrics,
    )
    web_app[API] = api
    web_app[LIVE] = live = Live()
    web_app.middlewares.append(api_middleware(settings, guard))
    web_app.add_routes(routes)

    async def _close(_: web.Application) -> None:
        await api.close()

    web_app.on_cleanup.append(_close)
    # Open change streams end when the server shuts down, not when their clients leave.
    web_app.on_shutdown.append(lambda _: live.close())
    rt.parts["api"] = api
    return api
