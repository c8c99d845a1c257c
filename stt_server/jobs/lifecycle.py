"""The job lifecycle: the only code that changes a job's status.

Every transition is one compare-and-set in the store together with its event (see
:meth:`Store.transition`): it applies only from the statuses it names, and reports whether it did.
So a cancel and a completion racing for one job cannot both win, a job that was cancelled never
comes back as completed, and every waiter (SSE, the synchronous OpenAI route, webhooks) hears
exactly one terminal event. Audio leaves the spool only through :meth:`Lifecycle.release_audio`.

    queued ──start──► running ──complete──► completed
       │                 │ ╰────fail──────► failed
       │                 ╰──requeue──► queued   (a stop or a restart: it runs again)
       ╰──cancel / fail (from queued or running)──► cancelled / failed
"""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog

from stt_server.jobs.events import EventBus
from stt_server.jobs.job import Job, Status
from stt_server.jobs.spool import Spool
from stt_server.jobs.store import EventRecord, Store

log = structlog.get_logger(__name__)

UNFINISHED = (Status.QUEUED, Status.RUNNING)


class Lifecycle:
    """Job status transitions, each with its event; audio release that respects new uploads."""

    def __init__(self, store: Store, bus: EventBus, spool: Spool, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.bus = bus
        self.spool = spool
        self.clock = clock

    async def _move(self, job_id: str, to: Status, from_: tuple[Status, ...], name: str, data: dict[str, Any],
                    changes: dict[str, Any] | None = None, transcript: dict[str, Any] | None = None) -> bool:
        async def persist(record: EventRecord) -> int | None:
            return await self.store.transition(job_id, to, from_, record, changes=changes, transcript=transcript)

        return await self.bus.emit_if(name, job_id, data, persist) is not None

    async def start(self, job_id: str) -> Job | None:
        """queued → running; the job as it now runs, or None when it is no longer queued."""
        job = await self.store.get_job(job_id)
        if job is None or job.status is not Status.QUEUED:
            return None
        started = job.started_at or self.clock()
        if not await self._move(job_id, Status.RUNNING, (Status.QUEUED,), "job.started",
                                {"engine": job.engine, "model": job.model}, {"started_at": started}):
            return None
        return job.evolve(status=Status.RUNNING, started_at=started)

    async def complete(self, job: Job, transcript: dict[str, Any], cached: bool) -> bool:
        """running → completed, saving the transcript in the same step (never for a cancelled job)."""
        finished = self.clock()
        seconds = round(finished - (job.started_at or finished), 3)
        done = await self._move(job.id, Status.COMPLETED, (Status.RUNNING,), "job.completed",
                                {"cached": cached, "seconds": seconds, "duration_s": job.duration_s},
                                {"finished_at": finished, "cached": int(cached), "error": None}, transcript)
        if done:
            log.info("job_completed", cached=cached, seconds=seconds)
        return done

    async def fail(self, job_id: str, message: str) -> bool:
        """queued or running → failed, with the message the user sees."""
        done = await self._move(job_id, Status.FAILED, UNFINISHED, "job.failed", {"error": message},
                                {"finished_at": self.clock(), "error": message})
        if done:
            log.warning("job_failed", job_id=job_id, error=message)
        return done

    async def cancel(self, job_id: str) -> bool:
        """queued or running → cancelled. The caller then stops whatever still works on it."""
        done = await self._move(job_id, Status.CANCELLED, UNFINISHED, "job.cancelled", {},
                                {"finished_at": self.clock()})
        if done:
            log.info("job_cancelled", job_id=job_id)
        return done

    async def requeue(self, job_id: str, reason: str) -> bool:
        """running → queued: the job stopped without an outcome (a drain, a stop) and runs again."""
        done = await self._move(job_id, Status.QUEUED, (Status.RUNNING,), "job.requeued", {"reason": reason})
        if done:
            log.info("job_requeued", job_id=job_id, reason=reason)
        return done

    async def delete(self, job: Job) -> None:
        """Forget a finished job: its rows and events go; its audio goes unless another job needs it."""
        await self.bus.emit("job.deleted", job.id)
        await self.store.delete_job(job.id)
        await self.release_audio(job)

    async def release_audio(self, job: Job) -> bool:
        """Remove the job's audio unless another job uses it, or an upload of it is being filed.

        The mark is taken before the count: an identical upload filed after it keeps its file
        (and one filed before it holds the file until its job row exists: see ``Spool.commit``).
        """
        mark = self.spool.commits
        if await self.store.count_jobs_with_sha(job.sha256, excluding=job.id):
            return False
        return self.spool.remove(job.sha256, unless_committed_after=mark)
