"""The outbound engine: any OpenAI-compatible ``/audio/transcriptions`` API through pooled httpx clients.

One ``httpx.AsyncClient`` per upstream (explicit limits and timeouts). Each call is one request to
the upstream the dispatch runner chose (``request.target``); a failure is raised as an EngineError
that says whether it may be retried, whether it counts against the upstream's circuit, and any
Retry-After. Routing, retries and circuits are the runner's. API keys live only in the clients'
headers: never in logs, errors or stats.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import ssl
import time
from collections import Counter
from typing import Any, Mapping

import httpx
import structlog
from h2.exceptions import H2Error

from stt_server.engines.backoff import RetryPolicy, retry_after_seconds
from stt_server.errors import EngineError
from stt_server.audio.media import SAMPLE_RATE, pcm_to_wav
from stt_server.settings import UpstreamSettings
from stt_server.audio.transcript import Transcript
from stt_server.audio.upload_format import UploadFormat
from stt_server.engines.base import ChunkRequest, EngineLimits, Target, Upload
from stt_server.engines.openai_format import parse_verbose_json, request_form, upstream_path

log = structlog.get_logger(__name__)

# A 400 that speaks of the file or its format is the upstream refusing the upload format
# (OpenAI: "Invalid file format. Supported formats: [...]"); a 415 always is.
_FORMAT_WORDS = re.compile(r"\b(file|format|codec|decod\w*|media|mime|content.type|ogg|opus|flac|mp3|wav)\b",
                           re.IGNORECASE)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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

    def __init__(self, s: UpstreamSettings, api_key: str | None) -> None:
        self.s, self._key = s, api_key
        self.client: httpx.AsyncClient | None = None
        self.connections_opened = 0
        self.by_status: Counter[str] = Counter()
        self.latency = _Histogram()
        self.last_status: str | None = None

    @property
    def target(self) -> Target:
        s = self.s
        return Target(s.name, s.concurrency, RetryPolicy(1 + s.retries, s.retry_base_s, s.retry_max_s),
                      s.circuit_threshold, s.circuit_cooldown_s, s.wire_format)

    def open(self) -> None:
        s = self.s
        plain_h2c = s.http2 and s.base_url.startswith("http://")  # prior knowledge, no ALPN
        verify = ssl.create_default_context(cafile=s.verify_tls) if isinstance(s.verify_tls, str) else s.verify_tls
        self.client = httpx.AsyncClient(
            base_url=s.base_url.rstrip("/"), http1=not plain_h2c, http2=s.http2, verify=verify,
            limits=httpx.Limits(max_connections=s.concurrency, max_keepalive_connections=s.concurrency),
            # The runner never sends more than ``concurrency`` at once: a request does not queue here.
            timeout=httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s),
            headers={"Authorization": f"Bearer {self._key}"} if self._key else None,
        )

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: count the TCP connections this pool opens."""
        if name == "connection.connect_tcp.complete":
            self.connections_opened += 1

    def record(self, status: str, kind: str, seconds: float) -> None:
        """One answered request (a cancelled one has no answer and is not counted)."""
        self.last_status = status
        self.by_status[kind] += 1
        self.latency.observe(seconds)

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
            "connections_open": self.connections_open(), "connections_opened_total": self.connections_opened,
            "requests_total": sum(self.by_status.values()), "requests_by_status": dict(self.by_status),
            "latency_s": self.latency.to_dict(), "last_status": self.last_status,
        }


class OpenAIEngine:
    """The Engine Protocol over one or more OpenAI-compatible upstreams serving one model."""

    def __init__(self, upstreams: list[UpstreamSettings], environ: Mapping[str, str] | None = None, *,
                 name: str = "openai", model: str | None = None) -> None:
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
            # The planner sizes chunks for the tightest byte limit at the bulkiest format.
            max_upload_bytes=min(u.max_upload_bytes for u in upstreams),
            concurrency=sum(u.concurrency for u in upstreams),
            upload_bytes_per_s=max(u.wire_format.worst_bytes_per_s for u in upstreams),
        )
        self._ups = {u.name: _Upstream(u, environ.get(u.api_key_env) if u.api_key_env else None) for u in upstreams}
        self.targets = tuple(up.target for up in self._ups.values())
        self._started = False

    async def start(self) -> None:
        """Open one pooled client per upstream."""
        for up in self._ups.values():
            if up.client is None:
                up.open()
        self._started = True

    @property
    def ready(self) -> bool:
        return self._started

    async def close(self) -> None:
        """Close every pool."""
        self._started = False
        for up in self._ups.values():
            if up.client is not None:
                await up.client.aclose()
                up.client = None

    def stats(self) -> dict[str, Any]:
        """Per upstream: connections, requests by status, latency (the runner adds its own figures)."""
        return {"engine": self.name, "model": self.model, "upstreams": {n: u.stats() for n, u in self._ups.items()}}

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        """One request to the upstream ``request.target`` names (the first one by default)."""
        if not self._started:
            raise EngineError(f"engine {self.name} is not started", retryable=False)
        up = self._ups[request.target] if request.target else next(iter(self._ups.values()))
        upload = request.upload  # encoded by the pipeline's decode hop; WAV when called directly
        if upload is None:
            upload = Upload(UploadFormat("wav"), await asyncio.to_thread(pcm_to_wav, request.samples))
        t0 = time.perf_counter()
        try:
            result = await self._send(up, upload, len(request.samples) / SAMPLE_RATE, request)
        except _UpstreamFailure as failure:
            up.record(failure.failure, failure.kind, time.perf_counter() - t0)
            raise
        up.record("200", "200", time.perf_counter() - t0)
        return result

    async def _send(self, up: _Upstream, upload: Upload, duration: float,
                    request: ChunkRequest) -> Transcript:
        if up.client is None:  # closed under us: shutting down
            raise EngineError(f"engine {self.name} is closed", retryable=False)
        try:
            async with asyncio.timeout(up.s.timeout_s + up.s.connect_timeout_s):  # whole-attempt bound
                resp = await up.client.post(upstream_path(request), data=request_form(up.s.model, request),
                                            files={"file": (upload.format.kind.filename, upload.data,
                                                            upload.format.kind.mime)},
                                            extensions={"trace": up.trace})
        except (httpx.TimeoutException, TimeoutError):
            raise _UpstreamFailure(up, "timeout", "timeout", against_upstream=True) from None
        except (httpx.TransportError, H2Error) as exc:
            raise _UpstreamFailure(up, f"connection error ({type(exc).__name__})", "connection_error",
                                   against_upstream=True) from None
        code = resp.status_code
        if 200 <= code < 300:
            try:
                return parse_verbose_json(resp.json(), duration, request.language)
            except (ValueError, TypeError, KeyError, AttributeError):  # not JSON, or not verbose_json
                raise _UpstreamFailure(up, f"{code} (invalid response body)", "invalid_response",
                                       against_upstream=True) from None
        detail = up.redact(_message(resp))
        refused = code == 415 or (code == 400 and _FORMAT_WORDS.search(detail) is not None)
        raise _UpstreamFailure(up, str(code), str(code), retryable=code in (408, 429) or code >= 500,
                               against_upstream=code >= 500, detail=detail,
                               refused_format=upload.format.spec if refused else None,
                               retry_after=retry_after_seconds(resp.headers.get("retry-after"), time.time()))


class _UpstreamFailure(EngineError):
    """One failed request, in the runner's terms; ``kind`` is its key in the upstream's figures."""

    def __init__(self, up: _Upstream, status: str, kind: str, **kwargs: Any) -> None:
        super().__init__(f"upstream {up.s.name} failed: last status {status}", failure=status, **kwargs)
        self.kind = kind


def _message(resp: httpx.Response) -> str:
    """The upstream's own error message, short."""
    try:
        data = resp.json()
        text = data["error"]["message"] if isinstance(data.get("error"), dict) else str(data.get("error") or data)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = resp.text
    return " ".join(str(text).split())[:200]
