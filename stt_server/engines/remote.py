"""The outbound engine: any OpenAI-compatible ``/audio/transcriptions`` API through pooled httpx clients.

One ``httpx.AsyncClient`` per upstream (explicit limits and timeouts), retries with jittered
backoff and Retry-After, a circuit breaker per upstream, and least-in-flight routing across
upstreams. API keys live only in the clients' headers: never in logs, errors or stats.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import httpx
import structlog
from h2.exceptions import H2Error

from ..backoff import backoff_delay, retry_after_seconds
from ..circuit import CircuitBreaker
from ..errors import EngineError
from ..media import SAMPLE_RATE, pcm_to_wav
from ..settings import UpstreamSettings
from ..transcript import Transcript
from .base import ChunkRequest, EngineLimits
from .openai_format import parse_verbose_json, request_form, upstream_path

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OnEvent = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class _Failure:
    """Why one attempt did not produce a transcript."""

    status: str  # "503", "timeout", "connection error (ConnectError)", ...
    kind: str  # the stats key: the status code, "timeout", "connection_error", "invalid_response"
    retryable: bool
    trips_circuit: bool
    retry_after: float | None = None
    detail: str = ""


class _Histogram:
    """Cumulative latency buckets in the Prometheus manner."""

    def __init__(self) -> None:
        self.counts, self.count, self.sum = [0] * (len(LATENCY_BUCKETS) + 1), 0, 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count, self.sum = self.count + 1, self.sum + seconds

    def to_dict(self) -> dict[str, Any]:
        bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
        le = {b: sum(self.counts[: i + 1]) for i, b in enumerate(bounds)}
        return {"le": le, "count": self.count, "sum": round(self.sum, 6)}


class _Upstream:
    """One upstream's client, breaker and figures."""

    def __init__(self, s: UpstreamSettings, api_key: str | None, clock: Callable[[], float]) -> None:
        self.s, self._key = s, api_key
        self.breaker = CircuitBreaker(s.circuit_threshold, s.circuit_cooldown_s, clock)
        self.client: httpx.AsyncClient | None = None
        self.in_flight = self.picks = self.retries = self.connections_opened = 0
        self.by_status: Counter[str] = Counter()
        self.latency = _Histogram()
        self.not_before = 0.0  # clock time before which Retry-After asks us not to call
        self.last_status: str | None = None

    def open(self) -> None:
        s = self.s
        plain_h2c = s.http2 and s.base_url.startswith("http://")  # prior knowledge, no ALPN
        verify = ssl.create_default_context(cafile=s.verify_tls) if isinstance(s.verify_tls, str) else s.verify_tls
        self.client = httpx.AsyncClient(
            base_url=s.base_url.rstrip("/"), http1=not plain_h2c, http2=s.http2, verify=verify,
            limits=httpx.Limits(max_connections=s.concurrency, max_keepalive_connections=s.concurrency),
            timeout=httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s),
            headers={"Authorization": f"Bearer {self._key}"} if self._key else None,
        )

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: count the TCP connections this pool opens."""
        if name == "connection.connect_tcp.complete":
            self.connections_opened += 1

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def connections_open(self) -> int | None:
        """Live connections in the pool (httpcore internals; None if they ever move)."""
        conns = getattr(getattr(getattr(self.client, "_transport", None), "_pool", None), "connections", None)
        return None if conns is None else sum(1 for c in conns if not c.is_closed())

    def stats(self) -> dict[str, Any]:
        s = self.s
        return {
            "base_url": s.base_url, "model": s.model, "http2": s.http2, "authenticated": self._key is not None,
            "circuit": self.breaker.state, "circuit_opened_total": self.breaker.times_opened,
            "consecutive_failures": self.breaker.consecutive_failures,
            "connections_open": self.connections_open(), "connections_opened_total": self.connections_opened,
            "in_flight": self.in_flight, "requests_total": sum(self.by_status.values()),
            "requests_by_status": dict(self.by_status), "retries_total": self.retries,
            "latency_s": self.latency.to_dict(), "last_status": self.last_status,
        }


CIRCUIT_EVENTS = {"opened": "upstream.circuit_opened", "closed": "upstream.circuit_closed"}


class OpenAIEngine:
    """The Engine Protocol over one or more OpenAI-compatible upstreams serving one model."""

    def __init__(self, upstreams: list[UpstreamSettings], on_event: OnEvent | None = None,
                 environ: Mapping[str, str] | None = None, *, name: str = "openai", model: str | None = None,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random) -> None:
        if not upstreams:
            raise ValueError("an openai engine needs at least one upstream")
        if len({u.name for u in upstreams}) != len(upstreams):
            raise ValueError("upstream names must be unique")
        environ = {} if environ is None else environ
        for u in upstreams:
            if u.api_key_env and not environ.get(u.api_key_env):
                raise ValueError(f"upstream {u.name}: environment variable {u.api_key_env} is not set")
        self.name, self.model = name, model or upstreams[0].model
        self.limits = EngineLimits(
            max_chunk_s=min(u.max_chunk_s for u in upstreams),
            max_upload_bytes=min(u.max_upload_bytes for u in upstreams),
            concurrency=sum(u.concurrency for u in upstreams),
        )
        self._ups = [_Upstream(u, environ.get(u.api_key_env) if u.api_key_env else None, clock) for u in upstreams]
        self._on_event, self._clock, self._rand = on_event, clock, rand
        self._started = False

    async def start(self) -> None:
        """Open one pooled client per upstream."""
        for up in self._ups:
            if up.client is None:
                up.open()
        self._started = True

    @property
    def ready(self) -> bool:
        return self._started

    async def close(self) -> None:
        """Close every pool."""
        self._started = False
        for up in self._ups:
            if up.client is not None:
                await up.client.aclose()
                up.client = None

    def stats(self) -> dict[str, Any]:
        """Per upstream: connections, in flight, requests by status, latency, retries, circuit."""
        return {"engine": self.name, "model": self.model, "upstreams": {u.s.name: u.stats() for u in self._ups}}

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        """Send the chunk to the best upstream, retrying as the failure allows; EngineError at the end."""
        if not self._started:
            raise EngineError(f"engine {self.name} is not started")
        wav = await asyncio.to_thread(pcm_to_wav, request.samples)  # CPU work, off the loop
        duration = len(request.samples) / SAMPLE_RATE
        max_attempts = 1 + max(u.s.retries for u in self._ups)
        attempt, last = 0, None
        while True:
            up = await self._choose(last)
            attempt, last = attempt + 1, up
            result = await self._attempt(up, wav, duration, request)
            if isinstance(result, Transcript):
                return result
            if not result.retryable or attempt >= max_attempts:
                raise self._error(up, result, attempt)
            up.retries += 1
            if result.retry_after is not None:
                up.not_before = self._clock() + result.retry_after
            delay = backoff_delay(attempt - 1, up.s.retry_base_s, up.s.retry_max_s, self._rand())
            log.info("upstream_retry", upstream=up.s.name, status=result.status, attempt=attempt,
                     delay_s=round(delay, 3))
            await asyncio.sleep(delay)

    async def _choose(self, last: _Upstream | None) -> _Upstream:
        """The healthy upstream with the fewest requests in flight, honouring Retry-After."""
        open_ = [u for u in self._ups if u.breaker.available()]
        if not open_:
            names = ", ".join(u.s.name for u in self._ups)
            status = (last or self._ups[0]).last_status
            raise EngineError(f"upstream {names} unavailable: circuit open; last status {status}")
        now = self._clock()
        ready = [u for u in open_ if u.not_before <= now]
        if ready:
            up = min(ready, key=lambda u: (u is last and len(ready) > 1, u.in_flight, u.picks))
        else:
            up = min(open_, key=lambda u: u.not_before)
            wait = up.not_before - now
            if wait > up.s.retry_max_s:
                raise EngineError(f"upstream {up.s.name} failed: last status {up.last_status}, "
                                  f"asked to retry after {wait:.1f} s")
            await asyncio.sleep(wait)
        if not up.breaker.allow():  # the circuit moved while we waited
            return await self._choose(last)
        up.picks += 1
        return up

    async def _attempt(self, up: _Upstream, wav: bytes, duration: float,
                       request: ChunkRequest) -> Transcript | _Failure:
        """One request to one upstream, with its figures and circuit bookkeeping."""
        up.in_flight += 1
        t0 = time.perf_counter()
        try:
            result = await self._send(up, wav, duration, request)
        except BaseException:  # cancelled: no verdict on the upstream, give the probe slot back
            up.breaker.release()
            raise
        finally:
            up.in_flight -= 1
            up.latency.observe(time.perf_counter() - t0)
        up.last_status = result.status if isinstance(result, _Failure) else "200"
        up.by_status[result.kind if isinstance(result, _Failure) else "200"] += 1
        failed = isinstance(result, _Failure) and result.trips_circuit
        transition = up.breaker.record_failure() if failed else up.breaker.record_success()
        if transition is not None:
            self._emit(CIRCUIT_EVENTS[transition], {
                "upstream": up.s.name, "last_status": up.last_status,
                "consecutive_failures": up.breaker.consecutive_failures, "cooldown_s": up.s.circuit_cooldown_s})
        return result

    async def _send(self, up: _Upstream, wav: bytes, duration: float, request: ChunkRequest) -> Transcript | _Failure:
        if up.client is None:  # closed under us: shutting down
            raise EngineError(f"engine {self.name} is closed")
        try:
            async with asyncio.timeout(up.s.timeout_s + up.s.connect_timeout_s):  # whole-attempt bound
                resp = await up.client.post(upstream_path(request), data=request_form(up.s.model, request),
                                            files={"file": ("chunk.wav", wav, "audio/wav")},
                                            extensions={"trace": up.trace})
        except (httpx.TimeoutException, TimeoutError):
            return _Failure("timeout", "timeout", True, True)
        except (httpx.TransportError, H2Error) as exc:
            return _Failure(f"connection error ({type(exc).__name__})", "connection_error", True, True)
        code = resp.status_code
        if 200 <= code < 300:
            try:
                return parse_verbose_json(resp.json(), duration, request.language)
            except (ValueError, TypeError, KeyError, AttributeError):  # not JSON, or not verbose_json
                return _Failure(f"{code} (invalid response body)", "invalid_response", True, True)
        retry_after = retry_after_seconds(resp.headers.get("retry-after"), time.time())
        retryable = code == 429 or code >= 500
        return _Failure(str(code), str(code), retryable, code >= 500, retry_after, up.redact(_message(resp)))

    def _error(self, up: _Upstream, failure: _Failure, attempts: int) -> EngineError:
        detail = f": {failure.detail}" if failure.detail else ""
        msg = f"upstream {up.s.name} failed: last status {failure.status} after {attempts} attempt(s){detail}"
        log.warning("upstream_failed", upstream=up.s.name, status=failure.status, attempts=attempts)
        return EngineError(up.redact(msg))

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        log.warning(name.replace(".", "_"), **data)
        if self._on_event is not None:
            try:
                self._on_event(name, data)
            except Exception:  # noqa: BLE001 - an observer must not fail a transcription
                log.exception("on_event_failed", event=name)


def _message(resp: httpx.Response) -> str:
    """The upstream's own error message, short."""
    try:
        data = resp.json()
        text = data["error"]["message"] if isinstance(data.get("error"), dict) else str(data.get("error") or data)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = resp.text
    return " ".join(str(text).split())[:200]
