"""Domain events: persisted with their job, fanned out to SSE subscribers and listeners."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import structlog

from stt_server.jobs.store import EventRecord, Store

log = structlog.get_logger(__name__)

EVENT_NAMES = (
    "job.created", "job.queued", "job.started", "job.cache_hit", "job.resumed",
    "job.completed", "job.failed", "job.cancelled", "job.deleted", "job.requeued",
    "chunk.planned", "chunk.started", "chunk.completed", "chunk.cache_hit", "chunk.skipped_silent",
    "chunk.retried", "chunk.failed", "transcript.delta",
    "cache.invalidated", "upstream.circuit_opened", "upstream.circuit_closed",
    "upstream.format_fallback",
    "engine.ready", "engine.failed", "server.started", "server.stopping",
    "webhook.delivered", "webhook.failed", "job.audio_expired", "job.transcript_expired",
)
TERMINAL_EVENTS = frozenset({"job.completed", "job.failed", "job.cancelled", "job.deleted"})


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    job_id: str | None
    data: dict[str, Any]
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.name, "job_id": self.job_id, "data": self.data,
                "created_at": self.created_at}


Listener = Callable[[Event], None]


@dataclass
class EventBus:
    """Emits events; job events are persisted before they are delivered."""

    store: Store
    clock: Callable[[], float] = time.time
    _subscribers: dict[str | None, set[asyncio.Queue[Event]]] = field(default_factory=lambda: defaultdict(set))
    _listeners: list[Listener] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Persist-then-deliver under one lock: subscribers see a job's events in id order, so a
    # client's Last-Event-ID is a complete cursor (nothing below it can still arrive).
    _order: asyncio.Lock = field(default_factory=asyncio.Lock)
    _publishing: set[asyncio.Task[Event]] = field(default_factory=set)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def emit(self, name: str, job_id: str | None = None, **data: Any) -> Event:
        """Persist (job events only), then deliver to subscribers and listeners.

        An event emitted while a request id is bound (an HTTP request, or a job that one created)
        carries it as ``request_id``, so a job can be traced back to the request that made it.
        """

        async def persist(record: EventRecord) -> int:
            return await self.store.add_event(job_id, record.name, record.data, record.created_at) if job_id else 0

        event = await self.emit_if(name, job_id, data, persist)
        assert event is not None
        return event

    async def emit_if(self, name: str, job_id: str | None, data: dict[str, Any],
                      persist: Callable[[EventRecord], Awaitable[int | None]]) -> Event | None:
        """Deliver the event if ``persist`` stores it (returns its id) along with whatever change it
        records; None, and nothing delivered, when ``persist`` declines (returns None)."""
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id is not None:
            data.setdefault("request_id", request_id)
        async with self._order:
            now = self.clock()
            event_id = await persist(EventRecord(name, data, now))
            if event_id is None:
                return None
            event = Event(event_id, name, job_id, data, now)
            self.counts[name] += 1
            for queue in (*self._subscribers.get(job_id, ()), *self._subscribers.get(None, ())):
                queue.put_nowait(event)
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:  # noqa: BLE001 - a listener must never break the pipeline
                    log.exception("event_listener_failed", event_name=name)
        return event

    def publish(self, name: str, data: dict[str, Any]) -> None:
        """Emit a server event from synchronous code on the loop (a dispatch runner's ``on_event`` callback)."""
        task = asyncio.get_running_loop().create_task(self.emit(name, None, **data), name=f"event-{name}")
        self._publishing.add(task)  # a strong reference until it is done
        task.add_done_callback(self._publishing.discard)

    def subscribe(self, job_id: str | None) -> asyncio.Queue[Event]:
        """Live events of one job (or of all jobs for ``None``) until :meth:`unsubscribe`."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str | None, queue: asyncio.Queue[Event]) -> None:
        subs = self._subscribers.get(job_id)
        if subs is not None:
            subs.discard(queue)
            if not subs:
                self._subscribers.pop(job_id, None)

    async def history(self, job_id: str, after_id: int = 0) -> list[Event]:
        rows = await self.store.events_for(job_id, after_id)
        return [Event(r.id, r.name, r.job_id, r.data, r.created_at) for r in rows]

    async def origin_request_id(self, job_id: str) -> str | None:
        """The request id stamped on the job's ``job.created`` event, if any."""
        for event in await self.history(job_id):
            if event.name == "job.created":
                request_id = event.data.get("request_id")
                return str(request_id) if request_id is not None else None
        return None
