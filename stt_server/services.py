"""Everything the server runs on, opened in order and closed in reverse: one object, no singletons."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Mapping, Sequence

import structlog

from stt_server.engines.backoff import RetryPolicy
from stt_server.cache.manager import CacheManager, open_cache
from stt_server.cache.keys import job_cache_keys
from stt_server.engines.dispatch import Dispatch
from stt_server.engines.base import Engine
from stt_server.engines.local import LocalEngine
from stt_server.engines.remote import OpenAIEngine
from stt_server.errors import BadRequest
from stt_server.jobs.events import EventBus, Listener
from stt_server.jobs.job import Job
from stt_server.jobs.jobqueue import JobQueue
from stt_server.jobs.lifecycle import Lifecycle
from stt_server.audio.pipeline import Pipeline
from stt_server.jobs.recovery import recover
from stt_server.jobs.retention import RetentionSweeper, running_sweeper
from stt_server.settings import Settings, UpstreamSettings
from stt_server.jobs.spool import Spool
from stt_server.jobs.store import Store
from stt_server.jobs.webhooks import WebhookSender, open_webhook_sender
from stt_server.jobs.workers import Workers

log = structlog.get_logger(__name__)

# Builds the engines from the settings.
EngineFactory = Callable[[Settings], Mapping[str, Engine]]


def default_engines(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Engine]:
    """The embedded engine (unless ``[local] enabled`` is false: then its model is never loaded),
    plus one OpenAIEngine per ``engine`` name of the ``[[upstreams]]``."""
    engines: dict[str, Engine] = ({"local": LocalEngine(settings.local, settings.data_path)}
                                  if settings.local.enabled else {})
    groups: dict[str, list[UpstreamSettings]] = {}
    for upstream in settings.upstreams:
        groups.setdefault(upstream.engine, []).append(upstream)
    for name, group in groups.items():
        if name == "local":
            raise ValueError(f"upstream engine name {name!r} is taken by the embedded engine")
        engines[name] = OpenAIEngine(group, os.environ if environ is None else environ, name=name)
    if settings.engine.default not in engines:
        raise ValueError(f"the default engine {settings.engine.default!r} is not configured; "
                         f"engines: {', '.join(engines) or 'none'}")
    return engines


@dataclass
class Services:
    settings: Settings
    store: Store
    bus: EventBus
    cache: CacheManager | None
    spool: Spool
    engines: Mapping[str, Engine]
    queue: JobQueue
    lifecycle: Lifecycle
    pipeline: Pipeline
    workers: Workers
    dispatch: Dispatch
    started_at: float = field(default_factory=time.time)
    accepting: bool = True
    engines_started: bool = False
    startup_error: str | None = None
    _starting: asyncio.Task[None] | None = field(default=None, repr=False)
    webhooks: WebhookSender | None = None
    # Audio seconds of uploads past the quota check whose job rows are not written yet, per owner.
    audio_reserved: dict[str, float] = field(default_factory=dict)
    sweeper: RetentionSweeper | None = None

    def engine_for(self, name: str | None) -> Engine:
        """The engine a request names, or the default one."""
        chosen = name or self.settings.engine.default
        if chosen not in self.engines:
            raise BadRequest(f"unknown engine {chosen!r}; this server offers {', '.join(self.engines)}",
                             param="engine", code="unknown_engine")
        return self.engines[chosen]

    @property
    def ready(self) -> bool:
        """Taking work: the default engine started and ready, and not shutting down. Other engines
        are reported (``engine_states``) but not required: a job for one that is down waits or fails alone."""
        default = self.engines.get(self.settings.engine.default)
        return self.accepting and self.engines_started and default is not None and default.ready

    def engine_states(self) -> dict[str, bool]:
        return {name: engine.ready for name, engine in self.engines.items()}

    async def start_engines(self, *, start_workers: bool = True) -> None:
        """Start (load) every engine, then the workers: until then, jobs wait in the queue."""
        for name, engine in self.engines.items():
            began = time.perf_counter()
            try:
                await engine.start()
            except Exception as exc:
                self.startup_error = f"engine {name} failed to start: {type(exc).__name__}: {exc}"
                log.exception("engine_start_failed", engine=name)
                await self.bus.emit("engine.failed", engine=name, error=self.startup_error)
                raise
            seconds = round(time.perf_counter() - began, 3)
            log.info("engine_ready", engine=name, seconds=seconds)
            await self.bus.emit("engine.ready", engine=name, seconds=seconds)
        self.engines_started = True
        if start_workers:
            self.workers.start()

    def start_engines_in_background(self, *, start_workers: bool = True) -> asyncio.Task[None]:
        """The server listens (healthz, readyz 503, uploads queue) while the model loads."""

        async def run() -> None:
            with contextlib.suppress(Exception):  # logged and kept in startup_error; readyz says 503
                await self.start_engines(start_workers=start_workers)

        self._starting = asyncio.create_task(run(), name="engines-start")
        return self._starting

    async def wait_ready(self) -> None:
        """Wait until the engines have started or failed to (see ``ready`` and ``startup_error``)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)

    async def cancel(self, job: Job) -> None:
        """Cancel a queued or running job at any moment: its status first (so every waiter hears
        ``job.cancelled`` at once), then its place in the queue or its running task, then its audio."""
        if await self.lifecycle.cancel(job.id):
            self.queue.remove(job.id)
            await self.workers.halt(job.id)
        await self.lifecycle.release_audio(job)

    async def delete(self, job: Job) -> None:
        """Delete a finished job: its cache entries (whole file and chunks), then the job and its audio."""
        if self.cache:
            keys = job_cache_keys(job, self.engines, await self.store.chunk_cache_keys(job.id))
            removed = await self.cache.invalidate(keys=keys)
            await self.bus.emit("cache.invalidated", job.id, keys=len(keys), removed=removed, reason="job deleted")
        await self.lifecycle.delete(job)

    async def enqueue(self, job: Job, *, force: bool = False) -> None:
        await self.queue.put(job.id, job.priority, client=job.owner or "", force=force,
                             enqueued_at=job.created_at)
        await self.bus.emit("job.queued", job.id, priority=job.priority)

    async def resume_unfinished(self) -> int:
        """Queue again every job a previous run left queued or running (see :mod:`recovery`)."""

        async def enqueue(job: Job) -> None:
            await self.enqueue(job, force=True)

        report = await recover(self.lifecycle, enqueue)
        return report.requeued


@contextlib.asynccontextmanager
async def open_services(settings: Settings, engine_factory: EngineFactory = default_engines,
                        *, workers: bool = True, background: bool = False,
                        listeners: Sequence[Listener] = ()) -> AsyncIterator[Services]:
    """Open everything; ``background`` loads engines after yielding, ``listeners`` hear every event."""
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(data / "jobs.sqlite3")
        stack.push_async_callback(store.close)
        bus = EventBus(store)
        for listener in listeners:
            bus.add_listener(listener)
        cache = await open_cache(data, settings.cache)
        stack.push_async_callback(cache.close)
        spool = Spool(data / "spool")
        spool.clear_incoming()
        engines = dict(engine_factory(settings))
        for engine in engines.values():
            stack.push_async_callback(engine.close)
        p = settings.pipeline
        dispatch = Dispatch(engines, RetryPolicy(1 + p.chunk_retries, p.retry_base_s, p.retry_max_s),
                            decoders=p.decoders or None, on_event=bus.publish)
        queue = JobQueue(max_queued=settings.queue.max_queued, ageing_s=settings.queue.ageing_s)
        lifecycle = Lifecycle(store, bus, spool)
        pipeline = Pipeline(p, store, bus, cache, spool.directory, dispatch, spool.decoded)
        runner = Workers(settings.queue.job_workers, queue, lifecycle, pipeline, engines)
        services = Services(settings, store, bus, cache, spool, engines, queue, lifecycle, pipeline, runner, dispatch)
        # Listening before resume_unfinished: a job it fails still gets its webhook.
        services.webhooks = await stack.enter_async_context(
            open_webhook_sender(settings.webhook, store, bus, os.environ))
        resumed = await services.resume_unfinished()
        services.sweeper = await stack.enter_async_context(
            running_sweeper(settings.retention, store, spool, bus, cache=cache, engines=engines))
        if workers:
            stack.push_async_callback(runner.stop)
        if background:
            stack.push_async_callback(_cancel, services.start_engines_in_background(start_workers=workers))
        else:
            await services.start_engines(start_workers=workers)
        log.info("services_started", data_dir=str(data), engines=list(engines), resumed=resumed)
        await bus.emit("server.started", engines=list(engines), resumed=resumed)
        yield services
        services.accepting = False


async def _cancel(task: asyncio.Task[None]) -> None:
    """Stop a start-up still loading (first, so it cannot start workers while they stop)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


from aiohttp import web  # noqa: E402 - the keys that carry the services through the aiohttp app

# One typed key per service: a route takes what it uses. SERVICES is the application facade for the
# few operations that span several of them (taking an upload, cancelling a job, readiness).
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
BUS = web.AppKey("bus", EventBus)
QUEUE = web.AppKey("queue", JobQueue)
SPOOL = web.AppKey("spool", Spool)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
WORKERS = web.AppKey("workers", Workers)
DISPATCH = web.AppKey("dispatch", Dispatch)
CACHE: web.AppKey[CacheManager | None] = web.AppKey("cache")


def publish(app: web.Application, services: Services) -> None:
    """Put every service under its own key (and the facade under SERVICES)."""
    app[SERVICES] = services
    app[SETTINGS] = services.settings
    app[STORE] = services.store
    app[BUS] = services.bus
    app[QUEUE] = services.queue
    app[SPOOL] = services.spool
    app[LIFECYCLE] = services.lifecycle
    app[WORKERS] = services.workers
    app[DISPATCH] = services.dispatch
    app[CACHE] = services.cache
