"""Talking to the server under test: start it (embedded or remote engine), submit, wait, time.

The server always runs as its own process (tests/serverproc.py), so its memory is its own and
the client's work does not share its GIL. Waiting uses the job's Server-Sent Events stream,
which ends with the job: no polling interval blurs the timings.
"""

from __future__ import annotations

import json
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from tests.fake_upstream import FakeUpstream
from tests.serverproc import ROOT, Server, running_server


# One client replays whole workloads: the per-client upload limits would turn them into 429s.
# One benchmark client stands for many users: the per-client limits would refuse it (50 jobs at once
# watch 50 event streams from one address).
BENCH_ENV = {"STT_LIMITS_UPLOADS_PER_MINUTE": "0", "STT_LIMITS_MAX_UPLOADS_PER_CLIENT": "0",
             "STT_LIMITS_MAX_QUEUED_AUDIO_S": "0", "STT_LIMITS_MAX_EVENT_STREAMS_PER_CLIENT": "1000"}


@dataclass(frozen=True)
class LatencyModel:
    """Upstream answer time: ``fixed_s`` plus ``per_audio_s`` for every second of audio sent."""

    fixed_s: float = 0.2
    per_audio_s: float = 0.02

    def of(self, audio_s: float) -> float:
        return self.fixed_s + self.per_audio_s * audio_s

    def __str__(self) -> str:
        return f"{self.fixed_s:g} s + {self.per_audio_s:g} s per audio second"


@contextmanager
def fake_upstream(latency: LatencyModel, bandwidth_bps: float | None = None) -> Iterator[FakeUpstream]:
    """The fake OpenAI-compatible upstream (plain http, HTTP/1.1 and h2c) in a background thread;
    ``bandwidth_bps``: one link every request body shares on its way in."""
    fake = FakeUpstream(latency_s=latency.fixed_s, latency_per_audio_s=latency.per_audio_s,
                        bandwidth_bps=bandwidth_bps).start()
    try:
        yield fake
    finally:
        fake.stop()


@contextmanager
def local_server(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``stt-server serve`` on the embedded engine (the shipped config.toml)."""
    with running_server(data_dir, env={**BENCH_ENV, **(env or {})}) as server:
        yield server


@contextmanager
def remote_server(data_dir: Path, upstream_url: str, concurrency: int = 8,
                  env: dict[str, str] | None = None) -> Iterator[Server]:
    """The server on the OpenAI-compatible engine only, at ``upstream_url`` (benchmarks/remote_server.py)."""
    environ = {**BENCH_ENV, "PYTHONPATH": str(ROOT), "STT_BENCH_UPSTREAM_URL": upstream_url,
               "STT_BENCH_UPSTREAM_CONCURRENCY": str(concurrency), **(env or {})}
    with running_server(data_dir, env=environ, module="benchmarks.remote_server") as server:
        yield server


def wait_sync(server: Server, job_id: str) -> dict[str, Any]:
    """Block until the job ends (its event stream closes); return the job."""
    with urllib.request.urlopen(f"{server.base}/v1/jobs/{job_id}/events", timeout=7200) as response:
        while response.read(1 << 16):
            pass
    job: dict[str, Any] = server.get(f"/v1/jobs/{job_id}")
    return job


def job_events(server: Server, job_id: str) -> list[dict[str, Any]]:
    """A finished job's events, as its Server-Sent Events stream replays them."""
    with urllib.request.urlopen(f"{server.base}/v1/jobs/{job_id}/events", timeout=60) as response:
        text = response.read().decode()
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


def run_job(server: Server, path: Path, **fields: str) -> dict[str, Any]:
    """Submit ``path`` and wait for it; adds ``seconds``: from the POST to the job's end (server clock)."""
    began = time.time()
    job = server.submit(path, **fields)
    done = wait_sync(server, job["id"])
    if done["status"] != "completed":
        raise RuntimeError(f"job {job['id']} ended {done['status']}: {done.get('error')}")
    return {**done, "seconds": float(done["finished_at"]) - began}


class Api:
    """An async client for many jobs at once (keep-alive connections, one pool)."""

    def __init__(self, base: str, connections: int = 100) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.AsyncClient(base_url=base, limits=limits, timeout=httpx.Timeout(600.0, connect=10.0))

    async def __aenter__(self) -> "Api":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def submit(self, path: Path, **fields: str) -> dict[str, Any]:
        response = await self.http.post("/v1/jobs", data=fields, files={"file": (path.name, path.read_bytes())})
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    async def get(self, url: str) -> Any:
        response = await self.http.get(url)
        response.raise_for_status()
        return response.json()

    async def wait(self, job_id: str) -> dict[str, Any]:
        """Until the job's event stream ends; then the job."""
        async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
            response.raise_for_status()  # a refused stream (429) is not the job's end
            async for _ in response.aiter_raw():
                pass
        job: dict[str, Any] = await self.get(f"/v1/jobs/{job_id}")
        return job

    async def transcribe(self, path: Path, **fields: str) -> tuple[dict[str, Any], float, float]:
        """POST, wait, fetch the transcript: the job, the seconds from POST to transcript, the POST's seconds."""
        began = time.perf_counter()
        job = await self.submit(path, **fields)
        posted = time.perf_counter()
        done = await self.wait(job["id"])
        if done["status"] == "completed":
            await self.get(f"/v1/jobs/{job['id']}/transcript")
        return done, time.perf_counter() - began, posted - began
