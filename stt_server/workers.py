"""Job workers: take job ids off the queue, run the pipeline, record how each job ended."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Mapping

import structlog

from .engines.base import Engine
from .errors import STTError
from .events import EventBus
from .job import Job, Status
from .jobqueue import JobQueue
from .pipeline import Interrupted, Pipeline
from .store import Store

log = structlog.get_logger(__name__)


class Workers:
    """A fixed number of worker tasks; each job runs as its own task so it can be cancelled alone."""

    def __init__(self, count: int, queue: JobQueue, store: Store, bus: EventBus, pipeline: Pipeline,
                 engines: Mapping[str, Engine], clock: Callable[[], float] = time.time) -> None:
        self.count = count
        self.queue = queue
        self.store = store
        self.bus = bus
        self.pipeline = pipeline
        self.engines = engines
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_requested: set[str] = set()
        self._draining = False

    @property
    def busy(self) -> int:
        return len(self._running)

    def running_ids(self) -> list[str]:
        return list(self._running)

    def start(self) -> None:
        for n in range(self.count):
            self._tasks.add(asyncio.create_task(self._loop(), name=f"job-worker-{n}"))

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop taking jobs; let running ones go on for ``grace_s``; cancel and wait for the rest."""
        for task in self._tasks:
            task.cancel()
        if self._running and grace_s > 0:
            await asyncio.wait(list(self._running.values()), timeout=grace_s)
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._running.values(), return_exceptions=True)
        self._tasks.clear()

    async def drain(self, grace_s: float) -> None:
        """Graceful stop: take no new job and start no new chunk; let chunks in flight finish and
        persist for up to ``grace_s``. Jobs stopped this way go back to queued and resume at the next start."""
        self._draining = True
        self.pipeline.draining = True
        running = list(self._running.values())
        if running and grace_s > 0:
            log.info("draining", jobs=len(running), grace_s=grace_s)
            await asyncio.wait(running, timeout=grace_s)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a running job and wait for it to stop; False when it was not running."""
        task = self._running.get(job_id)
        if task is None:
            return False
        self._cancel_requested.add(job_id)
        task.cancel()
        await asyncio.wait([task])
        return True

    async def _loop(self) -> None:
        while True:
            job_id = await self.queue.get()
            if self._draining:
                return  # the job stays queued in the store and runs after the next start
            task = asyncio.create_task(self._process(job_id), name=f"job-{job_id}")
            self._running[job_id] = task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    # The worker is being stopped: the job stops too and resumes at the next start.
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
            finally:
                self._running.pop(job_id, None)
                self._cancel_requested.discard(job_id)

    async def _process(self, job_id: str) -> None:
        job = await self.store.get_job(job_id)
        if job is None or job.status.finished:
            return
        # The job's own task: these bindings reach every line and event of its pipeline, no further.
        request_id = await self.bus.origin_request_id(job_id)
        structlog.contextvars.bind_contextvars(job_id=job_id, **({"request_id": request_id} if request_id else {}))
        started = job.started_at or self.clock()
        await self.store.update_job(job_id, status=Status.RUNNING, started_at=started)
        await self.bus.emit("job.started", job_id, engine=job.engine, model=job.model)
        try:
            engine = self.engines[job.engine]
            outcome = await self.pipeline.run(job.evolve(started_at=started), engine)
        except asyncio.CancelledError:
            await self._stopped(job)
            raise
        except Interrupted as stop:
            await self.store.update_job(job_id, status=Status.QUEUED)
            log.info("job_interrupted", reason=str(stop))
            return
        except STTError as err:
            await self._failed(job, err.message)
            return
        except Exception as exc:  # noqa: BLE001 - a job fails with a message, the worker lives on
            log.exception("job_crashed")
            await self._failed(job, f"internal error: {type(exc).__name__}: {exc}")
            return
        finished = self.clock()
        await self.store.set_transcript(job_id, outcome.transcript.to_dict())
        await self.store.update_job(job_id, status=Status.COMPLETED, finished_at=finished,
                                    cached=outcome.cached, error=None)
        await self.bus.emit("job.completed", job_id, cached=outcome.cached,
                            seconds=round(finished - started, 3), duration_s=job.duration_s)
        log.info("job_completed", cached=outcome.cached, seconds=round(finished - started, 3))

    async def _failed(self, job: Job, message: str) -> None:
        await self.store.update_job(job.id, status=Status.FAILED, finished_at=self.clock(), error=message)
        await self.bus.emit("job.failed", job.id, error=message)
        log.warning("job_failed", error=message)

    async def _stopped(self, job: Job) -> None:
        if job.id in self._cancel_requested:
            await self.store.update_job(job.id, status=Status.CANCELLED, finished_at=self.clock())
            await self.bus.emit("job.cancelled", job.id)
            log.info("job_cancelled")
        else:
            await self.store.update_job(job.id, status=Status.QUEUED)
            log.info("job_interrupted")
