"""Long operations as jobs a client polls: POST answers 202 at once, GET .../jobs/{id} follows.

Jobs live in the memory of the worker that started them: another worker answers 404 for them,
and a worker that stops loses its jobs (a running sync-all stops half way; running it again
publishes what is still waiting). One sync-all runs at a time per worker; asking for another
while it runs answers with the running one. The last MAX_FINISHED finished jobs are kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from streams.api.errors import ApiError
from streams.api.models import JobProgress, JobStatus, JobView, SyncAllResponse, SyncResult
from streams.api.publishing import CHANGED, PAGE, Publishing
from streams.api.store import Store
from streams.clock import clock

log = logging.getLogger(__name__)

JOB = "/storage-guard/jobs/{job_id}"
MAX_FINISHED = 100


@dataclass
class Job:
    id: UUID
    kind: str
    started_at: datetime
    status: JobStatus = "running"
    finished_at: datetime | None = None
    progress: JobProgress = field(
        default_factory=lambda: JobProgress(pages=0, processed=0, published=0)
    )
    result: SyncAllResponse | None = None
    error: str | None = None

    def view(self) -> JobView:
        return JobView(
            job_id=self.id,
            kind="sync-all",
            status=self.status,
            started_at=self.started_at,
            finished_at=self.finished_at,
            progress=self.progress,
            result=self.result,
            error=self.error,
            location=JOB.format(job_id=self.id),
        )


Progress = Callable[[JobProgress], None]


async def sync_all(store: Store, publishing: Publishing, progress: Progress) -> SyncAllResponse:
    """Publish every snapshot waiting in ready_to_publish, a page at a time, reporting each page.

    No deadline over the whole: each page's reads and writes have their own (MIS_API_TIMEOUT_S).
    """
    results: list[SyncResult] = []
    after: UUID | None = None
    pages = 0
    while True:
        rows = await store.ready_to_publish(after, PAGE)
        if not rows:
            break
        after = rows[-1]["booking_id"]
        published = await publishing.publish_rows(rows)
        retry = [r for r in rows if r["booking_id"] not in published]
        if retry:
            # Changed under us: publish what Postgres holds now, if it still waits.
            fresh = [await store.snapshot(r["booking_id"]) for r in retry]
            published |= await publishing.publish_rows(
                [f for f in fresh if f is not None and f["status"] == "ready_to_publish"]
            )
        results += [
            SyncResult(
                booking_id=r["booking_id"],
                success=r["booking_id"] in published,
                listing_id=published.get(r["booking_id"]),
                error=None if r["booking_id"] in published else CHANGED,
            )
            for r in rows
        ]
        pages += 1
        done = sum(1 for r in results if r.success)
        progress(JobProgress(pages=pages, processed=len(results), published=done))
        if len(rows) < PAGE:
            break
    done = sum(1 for r in results if r.success)
    return SyncAllResponse(total=len(results), published=done, results=results)


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[UUID, Job] = {}
        self._tasks: dict[UUID, asyncio.Task[None]] = {}

    def get(self, job_id: UUID) -> Job | None:
        return self._jobs.get(job_id)

    def running(self, kind: str) -> Job | None:
        return next(
            (j for j in self._jobs.values() if j.kind == kind and j.status == "running"), None
        )

    def start(
        self, kind: str, work: Callable[[Progress], Awaitable[SyncAllResponse]], who: str
    ) -> tuple[Job, bool]:
        """The running job of this kind, or a new one running ``work``; and whether it is new."""
        current = self.running(kind)
        if current is not None:
            return current, False
        job = Job(id=uuid4(), kind=kind, started_at=clock())
        self._jobs[job.id] = job
        self._tasks[job.id] = asyncio.create_task(self._run(job, work), name=f"job-{job.id}")
        log.info("job started job_id=%s kind=%s token=%s", job.id, kind, who)
        return job, True

    async def _run(self, job: Job, work: Callable[[Progress], Awaitable[SyncAllResponse]]) -> None:
        def progress(p: JobProgress) -> None:
            job.progress = p

        try:
            job.result = await work(progress)
            job.status = "succeeded"
        except ApiError as exc:
            job.status, job.error = "failed", exc.message
        except Exception:
            log.exception("job failed job_id=%s kind=%s", job.id, job.kind)
            job.status, job.error = "failed", "internal error; the worker's log has the details"
        finally:
            job.finished_at = clock()
            self._tasks.pop(job.id, None)
            self._forget_old()
        log.info(
            "job finished job_id=%s kind=%s status=%s processed=%d published=%d",
            job.id,
            job.kind,
            job.status,
            job.progress.processed,
            job.progress.published,
        )

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status != "running"]
        for old in sorted(finished, key=lambda j: j.started_at)[:-MAX_FINISHED]:
            del self._jobs[old.id]

    async def close(self) -> None:
        tasks: list[Any] = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
