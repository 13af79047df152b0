"""The state of each dependency of a worker, checked concurrently, each within a deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from confluent_kafka.admin import AdminClient
from pymongo import AsyncMongoClient

from streams.api.models import DependencyState, HealthResponse, WorkerInfo
from streams.api.store import Store
from streams.config import Settings

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0


class Down(Exception):
    """A dependency answered, but not as a healthy one does."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class Health:
    def __init__(self, settings: Settings, store: Store, app: Any) -> None:
        self._settings, self._store, self._app = settings, store, app
        self._timeout = min(CHECK_TIMEOUT_S, settings.api_timeout_s)
        ms = int(self._timeout * 1000)
        self._mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongo_url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms
        )
        self._kafka: AdminClient | None = None

    async def close(self) -> None:
        await self._mongo.close()

    async def report(self) -> HealthResponse:
        names = ("postgres", "mongodb", "kafka", "connector")
        probes = (self._postgres, self._mongodb, self._kafka_metadata, self._connector)
        states = await asyncio.gather(
            *(self._check(n, p) for n, p in zip(names, probes, strict=True))
        )
        checks = dict(zip(names, states, strict=True))
        up = all(s.status == "up" for s in checks.values())
        return HealthResponse(
            status="ok" if up else "unavailable", checks=checks, worker=self._worker()
        )

    async def _check(
        self, name: str, probe: Callable[[], Awaitable[dict[str, Any]]]
    ) -> DependencyState:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                extra = await probe()
        except TimeoutError:
            error, extra = f"no answer within {self._timeout:.0f}s", {}
        except Down as exc:
            error, extra = str(exc), exc.extra
        except Exception as exc:
            error, extra = f"{type(exc).__name__}: {exc}"[:300], {}
        else:
            latency = round((time.perf_counter() - started) * 1000, 1)
            return DependencyState(status="up", latency_ms=latency, **extra)
        log.warning("dependency down name=%s error=%s", name, error)
        return DependencyState(status="down", error=error, **extra)

    async def _postgres(self) -> dict[str, Any]:
        await self._store.ping()
        return {}

    async def _mongodb(self) -> dict[str, Any]:
        await self._mongo.admin.command("ping")
        return {}

    async def _kafka_metadata(self) -> dict[str, Any]:
        if self._kafka is None:
            self._kafka = AdminClient({"bootstrap.servers": self._settings.kafka_bootstrap})
        admin, timeout = self._kafka, self._timeout
        # librdkafka blocks: keep it off the event loop the worker's agents run on.
        await asyncio.to_thread(lambda: admin.list_topics(timeout=timeout))
        return {}

    async def _connector(self) -> dict[str, Any]:
        url = f"{self._settings.connect_url}/connectors/{self._settings.connector_name}/status"
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            if resp.status == 404:
                raise Down(f"connector {self._settings.connector_name} is not registered")
            if resp.status != 200:
                raise Down(f"Kafka Connect answered {resp.status}")
            body = await resp.json()
        state = str(body.get("connector", {}).get("state", "UNKNOWN"))
        tasks = [str(t.get("state", "UNKNOWN")) for t in body.get("tasks", [])]
        if state != "RUNNING" or not tasks or any(t != "RUNNING" for t in tasks):
            raise Down(f"connector {state}, tasks {tasks}", state=state, tasks=tasks)
        return {"state": state, "tasks": tasks}

    def _worker(self) -> WorkerInfo:
        try:
            assigned = len(self._app.consumer.assignment())
        except Exception:  # not started yet, or rebalancing
            assigned = 0
        return WorkerInfo(app_id=self._settings.app_id, assigned_partitions=assigned)
