"""Everything the server runs on, opened in order and closed in reverse: one object, no singletons."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Mapping

import structlog

from .cache import CacheManager, open_cache
from .engines.base import Engine
from .engines.local import LocalEngine
from .errors import BadRequest
from .events import EventBus
from .job import Job, Status
from .jobqueue import JobQueue
from .pipeline import Pipeline
from .settings import Settings
from .spool import Spool
from .store import Store
from .workers import Workers

log = structlog.get_logger(__name__)

EngineFactory = Callable[[Settings], Mapping[str, Engine]]


def default_engines(settings: Settings) -> dict[str, Engine]:
    return {"local": LocalEngine(settings.local)}


@dataclass
class Services:
    settings: Settings
    store: Store
    bus: EventBus
    cache: CacheManager | None
    spool: Spool
    engines: Mapping[str, Engine]
    queue: JobQueue
    pipeline: Pipeline
    workers: Workers
    started_at: float = field(default_factory=time.time)
    accepting: bool = True

    def engine_for(self, name: str | None) -> Engine:
        """The engine a request names, or the default one."""
        chosen = name or self.settings.engine.default
        if chosen not in self.engines:
            raise BadRequest(f"unknown engine {chosen!r}; this server offers {', '.join(self.engines)}",
                             param="engine", code="unknown_engine")
        return self.engines[chosen]

    @property
    def ready(self) -> bool:
        return self.accepting and all(e.ready for e in self.engines.values())

    async def enqueue(self, job: Job, *, force: bool = False) -> None:
        await self.queue.put(job.id, job.priority, force=force)
        await self.bus.emit("job.queued", job.id, priority=job.priority)

    async def resume_unfinished(self) -> int:
        """Queue again every job a previous run left queued or running."""
        jobs = await self.store.unfinished_jobs()
        for job in jobs:
            if not self.spool.path_for(job.sha256).exists():
                await self.store.update_job(job.id, status=Status.FAILED, finished_at=time.time(),
                                            error="the job's audio is missing from the spool")
                await self.bus.emit("job.failed", job.id, error="audio missing")
                continue
            if job.status is Status.RUNNING:
                await self.store.update_job(job.id, status=Status.QUEUED)
            await self.enqueue(job, force=True)
        return len(jobs)


@contextlib.asynccontextmanager
async def open_services(settings: Settings, engine_factory: EngineFactory = default_engines,
                        *, workers: bool = True) -> AsyncIterator[Services]:
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(data / "jobs.sqlite3")
        stack.push_async_callback(store.close)
        bus = EventBus(store)
        cache = await open_cache(data, settings.cache)
        stack.push_async_callback(cache.close)
        spool = Spool(data / "spool")
        spool.clear_incoming()
        engines = dict(engine_factory(settings))
        for engine in engines.values():
            stack.push_async_callback(engine.close)
            await engine.start()
        queue = JobQueue(max_queued=settings.queue.max_queued)
        pipeline = Pipeline(settings.pipeline, store, bus, cache, spool.directory)
        runner = Workers(settings.queue.job_workers, queue, store, bus, pipeline, engines)
        services = Services(settings, store, bus, cache, spool, engines, queue, pipeline, runner)
        resumed = await services.resume_unfinished()
        if workers:
            runner.start()
            stack.push_async_callback(runner.stop)
        log.info("services_started", data_dir=str(data), engines=list(engines), resumed=resumed)
        yield services
        services.accepting = False


from aiohttp import web  # noqa: E402 - the key that carries Services through the aiohttp app

SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
