"""(d) Concurrent jobs: 1, 5, 10 and 50 at once, on the embedded engine.

At 1, five jobs one after another; at the others, that many submitted at once. Every job is
different audio (20 s of corpus speech at its own gain: no cache hits).
Per level: throughput (jobs/s and audio seconds per second) and the job latency percentiles,
POST to transcript in hand. At 50, also: every job completes without error, and a client
polling ``GET /v1/jobs/{id}`` meanwhile (its own thread and connection) sees p99 under 50 ms,
beside the same request on the idle server.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.client import Api, local_server
from benchmarks.harness import Chart, Outcome, Progress, Row, ms, percentile
from benchmarks.inputs import distinct_long

LEVELS = (1, 5, 10, 50)
MIN_JOBS = 5  # jobs per level at least: at concurrency 1, five in a row
JOB_SECONDS = 20.0
TARGET_GET_P99_S = 0.050


@dataclass
class Level:
    """``jobs`` jobs with at most ``concurrency`` at once."""

    concurrency: int
    jobs: int
    wall_s: float
    latencies: list[float]
    failed: int
    ids: list[str]
    errors: list[str] = field(default_factory=list)  # the first few requests that raised
    get_latencies: list[float] = field(default_factory=list)  # GET /v1/jobs/{id} meanwhile (top level only)

    @property
    def throughput(self) -> float:
        return self.jobs / self.wall_s


class Poller(threading.Thread):
    """GET /v1/jobs/{id} in a loop over the ids it is given, timing each, until stopped."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.ids: list[str] = []
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30.0) as client:
            n = 0
            while not self.stopping.is_set():
                if not self.ids:
                    time.sleep(0.005)
                    continue
                began = time.perf_counter()
                client.get(f"/v1/jobs/{self.ids[n % len(self.ids)]}").raise_for_status()
                self.latencies.append(time.perf_counter() - began)
                n += 1
                time.sleep(0.005)


async def burst(base: str, files: list[Path], concurrency: int, poller: Poller | None = None) -> Level:
    """Submit the files, ``concurrency`` at a time; wait for all; time each from its POST to its transcript."""
    slots = asyncio.Semaphore(concurrency)
    async with Api(base, connections=2 * concurrency + 4) as api:
        ids: list[str] = []

        async def one(path: Path) -> tuple[bool, float]:
            async with slots:
                return await timed(path)

        async def timed(path: Path) -> tuple[bool, float]:
            began = time.perf_counter()
            job = await api.submit(path, language="en")
            ids.append(job["id"])
            if poller is not None:
                poller.ids.append(job["id"])
            done = await api.wait(job["id"])
            if done["status"] == "completed":
                await api.get(f"/v1/jobs/{job['id']}/transcript")
            return done["status"] == "completed", time.perf_counter() - began

        began = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in files), return_exceptions=True)
        wall = time.perf_counter() - began
    ok = [r for r in results if isinstance(r, tuple)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)][:5]
    failed = len(files) - sum(1 for good, _ in ok if good)
    return Level(concurrency, len(files), wall, [s for _, s in ok], failed, ids, errors)


def idle_get_latencies(base: str, job_id: str, count: int = 200) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=30.0) as client:
        for _ in range(count):
            began = time.perf_counter()
            client.get(f"/v1/jobs/{job_id}").raise_for_status()
            out.append(time.perf_counter() - began)
    return out


def measure(levels: tuple[int, ...], progress: Progress) -> tuple[list[Level], list[float]]:
    files = distinct_long(sum(max(n, MIN_JOBS) for n in levels), JOB_SECONDS, tag="concurrency")
    results: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="bench-conc-") as data, local_server(Path(data)) as server:
        used = 0
        idle: list[float] = []
        for concurrency in levels:
            jobs = max(concurrency, MIN_JOBS)
            batch, used = files[used:used + jobs], used + jobs
            poller = Poller(server.base) if concurrency == max(levels) else None
            if poller is not None:
                poller.start()
            level = asyncio.run(burst(server.base, batch, concurrency, poller))
            if poller is not None:
                poller.stopping.set()
                poller.join()
                level.get_latencies = poller.latencies
            results.append(level)
            progress.step(f"{jobs} jobs, {concurrency} at once: {level.wall_s:.1f} s, {level.failed} failed")
            if not idle:
                idle = idle_get_latencies(server.base, level.ids[0])
    return results, idle


def _lat(values: list[float]) -> str:
    return ", ".join(f"p{q} {percentile(values, q):.2f} s" for q in (50, 95, 99))


def run(progress: Progress, repeat: int) -> Outcome:
    levels, idle = measure(LEVELS, progress)
    base = levels[0]
    rows = []
    for level in levels:
        jobs = f"{level.jobs} jobs, {level.concurrency} at once"
        rows.append(Row("concurrency", f"{jobs} ({JOB_SECONDS:g} s of audio each): throughput",
                        f"{level.throughput:.2f} jobs/s ({level.throughput * JOB_SECONDS:.0f}× real time)",
                        f"{base.throughput:.2f} jobs/s one at a time", level.throughput / base.throughput,
                        "× one at a time"))
        rows.append(Row("concurrency", f"{jobs}: job latency, POST to transcript",
                        _lat(level.latencies), f"one at a time: {_lat(base.latencies)}"))
    top = levels[-1]
    rows.append(Row("concurrency", f"{top.jobs} jobs at once: completed without error",
                    f"{top.jobs - top.failed}/{top.jobs}", "", None, "", "all", top.failed == 0))
    get_p99 = percentile(top.get_latencies, 99)
    rows.append(Row("concurrency", f"GET /v1/jobs/{{id}} during the {top.jobs}-job burst ({len(top.get_latencies)} "
                    "requests)", f"p50 {ms(percentile(top.get_latencies, 50))}, p99 {ms(get_p99)}",
                    f"idle: p50 {ms(percentile(idle, 50))}, p99 {ms(percentile(idle, 99))}",
                    get_p99 / percentile(idle, 99), "× the idle p99", "p99 < 50 ms",
                    get_p99 < TARGET_GET_P99_S))
    x = [str(level.concurrency) for level in levels]
    charts = [
        Chart("concurrency_throughput", f"Throughput, embedded engine, {JOB_SECONDS:g} s jobs", x,
              {"jobs/s": [level.throughput for level in levels]}, "jobs per second", "line", "jobs at once"),
        Chart("concurrency_latency", "Job latency, POST to transcript", x,
              {f"p{q}": [percentile(level.latencies, q) for level in levels] for q in (50, 95, 99)},
              "seconds", "line", "jobs at once"),
    ]
    raw = {"levels": [level.__dict__ for level in levels], "idle_get_s": idle}
    return Outcome("concurrency", rows, charts, raw)
