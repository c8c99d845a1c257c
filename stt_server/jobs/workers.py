"""Job workers: take job ids off the queue, run the pipeline, record how each job ended."""

from __future__ import annotations

import asyncio
from typing import Mapping

import structlog

from stt_server.engines.base import Engine
from stt_server.errors import STTError
from stt_server.jobs.jobqueue import JobQueue
from stt_server.jobs.lifecycle import Lifecycle
from stt_server.audio.pipeline import Interrupted, Pipeline

log = structlog.get_logger(__name__)


class Workers:
    """A fixed number of worker tasks; each job runs as its own task so it can be stopped alone.

    Workers decide nothing about a job's status: they ask the lifecycle to start, complete, fail
    or requeue it, and each of those applies only if nobody (a cancel) got there first.
    """

    def __init__(self, count: int, queue: JobQueue, lifecycle: Lifecycle, pipeline: Pipeline,
                 engines: Mapping[str, Engine]) -> None:
        self.count = count
        self.queue = queue
        self.lifecycle = lifecycle
        self.pipeline = pipeline
        self.engines = engines
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
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

    async def halt(self, job_id: str, wait_s: float = 1.0) -> None:
        """Stop the work on a job whose status the lifecycle has already settled (cancelled)."""
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=wait_s)

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

    async def _process(self, job_id: str) -> None:
        """Run one job. Whatever happens, it leaves running: completed, failed, or queued again
        (a cancel that came first wins every one of these, as the lifecycle only moves a running job)."""
        reason = "stopped"
        try:
            job = await self.lifecycle.start(job_id)
            if job is None:
                return  # cancelled or deleted while it waited
            # The job's own task: these bindings reach every line and event of its pipeline, no further.
            request_id = await self.lifecycle.bus.origin_request_id(job_id)
            structlog.contextvars.bind_contextvars(job_id=job_id, **({"request_id": request_id} if request_id else {}))
            outcome = await self.pipeline.run(job, self.engines[job.engine])
            await self.lifecycle.complete(job, outcome.transcript.to_dict(), outcome.cached)
        except Interrupted as stop:
            reason = str(stop)
        except STTError as err:
            await self.lifecycle.fail(job_id, err.message)
        except Exception as exc:  # noqa: BLE001 - a job fails with a message, the worker lives on
            log.exception("job_crashed")
            await self.lifecycle.fail(job_id, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            # A no-op unless the job is still running: a stop, a drain, or an error while settling it.
            await asyncio.shield(self.lifecycle.requeue(job_id, reason))
