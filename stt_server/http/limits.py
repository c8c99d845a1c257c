"""The gate every upload passes before its body is read: rate per client, unfinished jobs per
client, uploads in progress per client, and a server-wide bound on uploads in progress.

Per-client limits answer 429 (this client asks too much). The server-wide bound answers 503
(the server as a whole is busy, whoever asks; a load balancer may send the retry elsewhere), and
only after ``upload_wait_s`` of waiting for a slot: short bursts queue instead of failing. Every
per-client limit is checked before a slot is taken, and one client holds (or waits for) at most
``max_uploads_per_client`` slots, so one key cannot take them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import AsyncIterator, Iterator

from aiohttp import web

from stt_server.http.descriptors import nofile_limit, stream_cap
from stt_server.errors import TooManyRequests, Unavailable
from stt_server.http.ratelimit import Clock, RateLimiter
from stt_server.settings import LimitSettings
from stt_server.jobs.store import Store

BUSY_RETRY_S = 5
TOO_MANY_JOBS_RETRY_S = 30


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class UploadGate:
    """Admits an upload, or raises 429/503 with Retry-After; holds a slot while it is read and probed."""

    def __init__(self, settings: LimitSettings, *, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.rate = RateLimiter(settings.uploads_per_minute, settings.upload_burst, clock=clock)
        self.slots = asyncio.Semaphore(settings.max_concurrent_uploads) if settings.max_concurrent_uploads > 0 else None
        self.in_progress = 0
        self.per_client: dict[str, int] = {}
        self.refused = {"rate": 0, "jobs": 0, "uploads": 0, "busy": 0}

    async def _check_client(self, client: str, store: Store) -> None:
        wait = self.rate.check(client)
        if wait > 0:
            self.refused["rate"] += 1
            raise TooManyRequests(
                f"too many uploads: at most {self.settings.uploads_per_minute:g} per minute "
                f"(bursts of {self.settings.upload_burst}); retry in {math.ceil(wait)} s",
                headers=_retry_after(wait))
        limit = self.settings.max_unfinished_jobs
        if limit > 0 and await store.count_unfinished(client) >= limit:
            self.refused["jobs"] += 1
            raise TooManyRequests(f"too many unfinished jobs: at most {limit} queued or running at once",
                                  code="too_many_jobs", headers=_retry_after(TOO_MANY_JOBS_RETRY_S))
        uploads = self.settings.max_uploads_per_client
        if uploads > 0 and self.per_client.get(client, 0) >= uploads:
            self.refused["uploads"] += 1
            raise TooManyRequests(f"too many uploads in progress: at most {uploads} at once",
                                  code="too_many_uploads", headers=_retry_after(BUSY_RETRY_S))

    async def _acquire(self) -> None:
        if self.slots is None:
            return
        try:
            await asyncio.wait_for(self.slots.acquire(), self.settings.upload_wait_s)
        except asyncio.TimeoutError:
            self.refused["busy"] += 1
            raise Unavailable("the server is busy with other uploads; try again shortly", code="busy",
                              headers=_retry_after(BUSY_RETRY_S)) from None

    @contextlib.asynccontextmanager
    async def admit(self, client: str, store: Store) -> AsyncIterator[None]:
        """Check ``client``'s limits, then hold an upload slot for the body of the ``with``."""
        await self._check_client(client, store)
        self.per_client[client] = self.per_client.get(client, 0) + 1
        try:
            await self._acquire()
            self.in_progress += 1
            try:
                yield
            finally:
                self.in_progress -= 1
                if self.slots is not None:
                    self.slots.release()
        finally:
            self.per_client[client] -= 1
            if not self.per_client[client]:
                del self.per_client[client]

    def stats(self) -> dict[str, object]:
        return {"in_progress": self.in_progress, "max_concurrent": self.settings.max_concurrent_uploads,
                "clients_tracked": len(self.rate), "refused": dict(self.refused)}


UPLOAD_GATE: web.AppKey[UploadGate] = web.AppKey("upload_gate", UploadGate)


class StreamGate:
    """Bounds event streams open at once, per client and in total (429 past either)."""

    def __init__(self, settings: LimitSettings, nofile: int | None = None) -> None:
        self.per_client_cap = settings.max_event_streams_per_client
        self.cap = stream_cap(settings.max_event_streams, nofile_limit() if nofile is None else nofile)
        self.open = 0
        self.per_client: dict[str, int] = {}
        self.refused = 0

    @contextlib.contextmanager
    def admit(self, client: str) -> Iterator[None]:
        mine = self.per_client.get(client, 0)
        if self.open >= self.cap or (self.per_client_cap > 0 and mine >= self.per_client_cap):
            self.refused += 1
            which = "for this client" if self.open < self.cap else "on this server"
            refusal = TooManyRequests(f"too many event streams open {which}; close one or poll the job instead",
                                      code="too_many_streams", headers=_retry_after(BUSY_RETRY_S))
            refusal.close_connection = True  # a refused flood must not linger as idle connections
            raise refusal
        self.open += 1
        self.per_client[client] = mine + 1
        try:
            yield
        finally:
            self.open -= 1
            self.per_client[client] -= 1
            if not self.per_client[client]:
                del self.per_client[client]

    def stats(self) -> dict[str, object]:
        return {"open": self.open, "max": self.cap, "refused": self.refused}


STREAM_GATE: web.AppKey[StreamGate] = web.AppKey("stream_gate", StreamGate)
