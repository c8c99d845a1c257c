"""Webhooks: when a job ends, POST it as JSON to the URL it carries, signed, retried, recorded.

The signature follows Stripe's scheme: the header ``X-STT-Signature: t=<unix>,v1=<hex>`` where
``hex`` is HMAC-SHA256 under the shared secret of ``f"{t}."`` followed by the exact body bytes.
Signing the timestamp with the body lets a receiver refuse replays of an old delivery
(:func:`verify` does both checks). Signing and verifying are pure functions; the sender does
the I/O: one task per delivery, kept in a set it owns and cancels on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, NamedTuple, Sequence

import aiohttp
import structlog

from stt_server.engines.backoff import backoff_delay, retry_after_seconds
from stt_server.jobs.events import Event, EventBus
from stt_server.jobs.job import Status
from stt_server.settings import WebhookSettings
from stt_server.jobs.store import Store
from stt_server.jobs.webhook_target import AddressRefused, GuardedResolver, Resolver, literal_refusal, redact_url, system_resolver

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-STT-Signature"
EVENT_HEADER = "X-STT-Event"
DEFAULT_TOLERANCE_S = 300.0
RETRIED_4XX = frozenset({408, 429})
DELIVERED_EVENTS = frozenset({"job.completed", "job.failed", "job.cancelled"})
_EVENT_FOR_STATUS = {Status.COMPLETED: "job.completed", Status.FAILED: "job.failed",
                     Status.CANCELLED: "job.cancelled"}


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _parse(header: str) -> tuple[int, list[str]] | None:
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return None
        elif name == "v1":
            macs.append(value)
    return (timestamp, macs) if timestamp is not None and macs else None


def verify(secret: bytes, header: str | None, body: bytes, now: float,
           tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """True if ``header`` signs ``body`` under ``secret`` with a timestamp within ``tolerance_s`` of ``now``."""
    parsed = _parse(header) if header else None
    if parsed is None:
        return False
    timestamp, macs = parsed
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    # Compare every candidate, constant-time each, so the answer's timing says nothing.
    matches = [hmac.compare_digest(expected.encode(), mac.encode()) for mac in macs]
    return any(matches)


def delivered(attempts: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any recorded attempt got a 2xx answer."""
    return any(a.get("status") is not None and 200 <= int(a["status"]) < 300 for a in attempts)


def webhook_view(url: str, attempts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``webhook`` member of ``GET /v1/jobs/{id}``."""
    return {"url": redact_url(url), "attempts": list(attempts), "delivered": delivered(attempts)}


def worth_retrying(status: int | None, final: bool) -> bool:
    """Whether an attempt that did not deliver is tried again: not after a refusal of ours, nor
    after a 4xx answer (the receiver will say the same again) other than 408 and 429."""
    if final:
        return False
    return status is None or not 400 <= status < 500 or status in RETRIED_4XX


def refused_address(exc: BaseException) -> bool:
    """Whether a connection failed because the guard refused the address the host resolved to."""
    return isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, AddressRefused)


def error_kind(exc: BaseException) -> str:
    """What the job's owner is told of a failed connection: a kind, never the raw error (which
    would turn webhooks into a port scanner of the server's network)."""
    if refused_address(exc):
        return "refused: the host resolves to an address webhooks may not reach"
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError)):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection was closed before an answer"
    return "the request failed"


class Attempt(NamedTuple):
    status: int | None
    error: str | None
    seconds: float
    retry_after: float | None
    final: bool = False  # refused by us: never retried


def secret_from_env(settings: WebhookSettings, environ: Mapping[str, str]) -> bytes:
    """The signing secret, from the environment variable the settings name (empty: unsigned)."""
    return environ.get(settings.secret_env, "").encode() if settings.secret_env else b""


class WebhookSender:
    """Delivers a job's terminal event to its ``webhook_url``, retrying until ``max_elapsed_s``
    after the job finished; every attempt is recorded in the store."""

    def __init__(self, settings: WebhookSettings, store: Store, bus: EventBus, session: aiohttp.ClientSession,
                 secret: bytes, *, clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.session = session
        self._secret = secret
        self.clock = clock
        self.rand = rand
        self.sleep = sleep
        self._active: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._warned_unsigned = False

    @property
    def pending(self) -> int:
        return len(self._active)

    def on_event(self, event: Event) -> None:
        """EventBus listener: start a delivery when a job ends; drop it when the job is deleted."""
        if event.job_id is None:
            return
        if event.name == "job.deleted":
            task = self._active.get(event.job_id)
            if task is not None:
                task.cancel()
        elif event.name in DELIVERED_EVENTS:
            self.deliver(event.job_id, event.name)

    def deliver(self, job_id: str, event_name: str, *, first_attempt: int = 1) -> None:
        """Start delivering (once per job: a job ends once); a no-op after :meth:`close`."""
        if self._closed or job_id in self._active:
            return
        task = asyncio.create_task(self._run(job_id, event_name, first_attempt), name=f"webhook-{job_id}")
        self._active[job_id] = task
        task.add_done_callback(lambda t: self._done(job_id, t))

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._active.get(job_id) is task:
            del self._active[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook_crashed", job_id=job_id, exc_info=task.exception())

    async def resume(self) -> int:
        """Retry deliveries a previous run left undelivered whose window is still open."""
        window_start = self.clock() - self.settings.max_elapsed_s
        pending = await self.store.undelivered_webhooks(finished_since=window_start)
        for job, tries in pending:
            self.deliver(job.id, _EVENT_FOR_STATUS[job.status], first_attempt=tries + 1)
        return len(pending)

    async def close(self) -> None:
        """Cancel deliveries in flight and wait for them (they resume at the next start)."""
        self._closed = True
        tasks = list(self._active.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job_id: str, event_name: str, attempt: int) -> None:
        job = await self.store.get_job(job_id)
        if job is None or not job.webhook_url:
            return
        url = job.webhook_url
        if not self._secret and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("webhook_unsigned", secret_env=self.settings.secret_env,
                        hint="set this environment variable to sign webhook deliveries")
        body = json.dumps({**job.to_api(), "event": event_name}, separators=(",", ":")).encode()
        deadline = (job.finished_at or self.clock()) + self.settings.max_elapsed_s
        shown = redact_url(url)
        while True:
            at = self.clock()
            status, error, seconds, retry_after, final = await self._attempt(url, body, event_name, job_id,
                                                                             attempt)
            await self.store.add_webhook_attempt(job_id, attempt, at, status, error, seconds)
            if status is not None and 200 <= status < 300:
                log.info("webhook_delivered", job_id=job_id, url=shown, attempts=attempt, status=status)
                await self.bus.emit("webhook.delivered", job_id, attempts=attempt, status=status)
                return
            delay = self._delay(attempt, retry_after)
            if worth_retrying(status, final) and self.clock() + delay <= deadline:
                log.info("webhook_retry", job_id=job_id, url=shown, attempt=attempt, status=status,
                         error=error, delay_s=round(delay, 3))
                await self.sleep(delay)
                # a sleep that overran (a busy loop) does not earn an attempt past the deadline
                if self.clock() <= deadline:
                    attempt += 1
                    continue
            log.warning("webhook_failed", job_id=job_id, url=shown, attempts=attempt, status=status, error=error)
            await self.bus.emit("webhook.failed", job_id, attempts=attempt, status=status, error=error)
            return

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        delay = backoff_delay(attempt - 1, s.retry_base_s, s.retry_max_s, self.rand())
        if retry_after is not None:  # the receiver asked for a pause: honour it, up to our cap
            delay = max(delay, min(retry_after, s.retry_max_s))
        return delay

    async def _attempt(self, url: str, body: bytes, event_name: str, job_id: str, attempt: int) -> Attempt:
        """One POST: its status, or the kind of error that stopped it."""
        refusal = literal_refusal(url, self.settings)  # literal addresses never reach the resolver
        if refusal:
            return Attempt(None, f"refused: {refusal}", 0.0, None, final=True)
        now = self.clock()
        headers = {"Content-Type": "application/json", "User-Agent": "stt-server-webhooks/1",
                   EVENT_HEADER: event_name, "X-STT-Job-Id": job_id, "X-STT-Attempt": str(attempt)}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, int(now), body)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        began = time.perf_counter()
        try:
            # No redirects: a 3xx would turn the POST into a GET to wherever it points.
            async with self.session.post(url, data=body, headers=headers, timeout=timeout,
                                         allow_redirects=False) as response:
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
            return Attempt(status, None, round(time.perf_counter() - began, 4), retry_after)
        except TimeoutError:
            error = f"timed out after {self.settings.timeout_s:g} s"
        except (aiohttp.ClientError, ValueError) as exc:
            # The exception's text names the URL (credentials, query): only its class goes to the log.
            log.info("webhook_error", job_id=job_id, url=redact_url(url), error_type=type(exc).__name__)
            return Attempt(None, error_kind(exc), round(time.perf_counter() - began, 4), None,
                           final=refused_address(exc))
        return Attempt(None, error, round(time.perf_counter() - began, 4), None)


@contextlib.asynccontextmanager
async def open_webhook_sender(settings: WebhookSettings, store: Store, bus: EventBus,
                              environ: Mapping[str, str],
                              resolver: Resolver = system_resolver) -> AsyncIterator[WebhookSender]:
    """An HTTP session and a sender listening on ``bus``; undelivered webhooks resume; closed in order.

    The session resolves names through :class:`GuardedResolver` (no DNS cache: each connection is
    checked), never reads proxy settings from the environment, and sends no cookies back."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(settings, resolver), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        sender = WebhookSender(settings, store, bus, session, secret_from_env(settings, environ))
        bus.add_listener(sender.on_event)
        try:
            await sender.resume()
            yield sender
        finally:
            await sender.close()
