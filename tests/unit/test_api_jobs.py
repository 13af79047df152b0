"""sync-all as a job: progress page by page, the result once done, one at a time per worker."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from streams.api import jobs
from streams.api.errors import Unavailable
from streams.api.jobs import Jobs
from streams.api.models import JobProgress, SyncAllResponse
from streams.api.publishing import PAGE


class Waiting:
    """ready_to_publish rows in booking_id order, as the Store pages them."""

    def __init__(self, count: int) -> None:
        self.rows = [
            {"booking_id": UUID(int=n), "status": "ready_to_publish"} for n in range(1, count + 1)
        ]

    async def ready_to_publish(self, after: UUID | None, limit: int) -> list[dict[str, Any]]:
        rows = [r for r in self.rows if after is None or r["booking_id"] > after]
        return rows[:limit]

    async def snapshot(self, booking_id: UUID) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["booking_id"] == booking_id), None)


class Publisher:
    """Publishes every row but those that 'changed' once (the first attempt of each)."""

    def __init__(self, store: Waiting, changed: set[UUID]) -> None:
        self.store, self.changed = store, set(changed)

    async def publish_rows(self, rows: Sequence[Mapping[str, Any]]) -> dict[UUID, str]:
        done: dict[UUID, str] = {}
        for row in rows:
            booking_id = row["booking_id"]
            if booking_id in self.changed:
                self.changed.discard(booking_id)
                continue
            done[booking_id] = f"listing-{booking_id.int}"
            row_in_store = next(r for r in self.store.rows if r["booking_id"] == booking_id)
            row_in_store["status"] = "published"
        return done


def test_sync_all_reports_each_page_and_retries_rows_that_changed() -> None:
    store = Waiting(PAGE + 3)
    seen: list[JobProgress] = []
    result = asyncio.run(
        jobs.sync_all(store, Publisher(store, {UUID(int=2)}), seen.append)  # type: ignore[arg-type]
    )
    assert result.total == result.published == PAGE + 3
    assert [(p.pages, p.processed, p.published) for p in seen] == [
        (1, PAGE, PAGE),
        (2, PAGE + 3, PAGE + 3),
    ]


def test_a_job_runs_in_the_background_one_at_a_time_and_keeps_its_result() -> None:
    async def main() -> None:
        registry = Jobs()
        release = asyncio.Event()

        async def work(progress: jobs.Progress) -> SyncAllResponse:
            progress(JobProgress(pages=1, processed=5, published=4))
            await release.wait()
            return SyncAllResponse(total=5, published=4, results=[])

        job, new = registry.start("sync-all", work, "ops")
        again, second = registry.start("sync-all", work, "ops")
        assert new and not second and again.id == job.id
        await asyncio.sleep(0)
        view = registry.get(job.id).view()  # type: ignore[union-attr]
        assert view.status == "running" and view.progress.processed == 5 and view.result is None
        assert view.location == f"/storage-guard/jobs/{job.id}"
        release.set()
        while job.status == "running":
            await asyncio.sleep(0.01)
        view = job.view()
        assert view.status == "succeeded" and view.result is not None
        assert view.result.published == 4 and view.finished_at is not None

        async def down(progress: jobs.Progress) -> SyncAllResponse:
            raise Unavailable("postgres: no connection within the timeout")

        failed, new = registry.start("sync-all", down, "ops")
        assert new and failed.id != job.id
        while failed.status == "running":
            await asyncio.sleep(0.01)
        assert failed.error == "postgres: no connection within the timeout"
        await registry.close()

    asyncio.run(main())


def test_only_the_last_finished_jobs_are_kept() -> None:
    async def main() -> None:
        registry = Jobs()

        async def work(progress: jobs.Progress) -> SyncAllResponse:
            return SyncAllResponse(total=0, published=0, results=[])

        first, _ = registry.start("sync-all", work, "ops")
        for _ in range(jobs.MAX_FINISHED + 1):
            job, _ = registry.start("sync-all", work, "ops")
            while job.status == "running":
                await asyncio.sleep(0)
        assert registry.get(first.id) is None and registry.get(job.id) is not None

    asyncio.run(main())
