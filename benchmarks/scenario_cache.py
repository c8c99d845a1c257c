"""(c) The cache on a replay workload: hit rate and hit latency, before and after a restart.

200 submissions of which 70 % repeat earlier audio (distinct audio: corpus clips at distinct
gains), one at a time, on the embedded engine. Latency is the client's time from the POST to
the completed transcript in hand. Then the server restarts on the same data directory (L1 is
warmed from L3) and the same 200 submissions replay: every one is now a repeat.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.client import Api, local_server
from benchmarks.harness import Chart, Outcome, Progress, Row, ms, percentile
from benchmarks.inputs import distinct_clips
from tests.serverproc import Server

SUBMISSIONS = 200
REPEAT_FRACTION = 0.7
TARGET_HIT_P95_S = 0.050


def workload(submissions: int, repeat_fraction: float, seed: int = 7) -> list[int]:
    """Which distinct file each submission sends: the first sends file 0, ``repeat_fraction`` repeat."""
    rng = random.Random(seed)
    distinct = round(submissions * (1 - repeat_fraction))
    new_at = {0, *rng.sample(range(1, submissions), distinct - 1)}
    order, seen = [], 0
    for n in range(submissions):
        if n in new_at:
            order.append(seen)
            seen += 1
        else:
            order.append(rng.randrange(seen))
    return order


@dataclass
class Phase:
    """One pass over the workload: per submission, whether it was a cache hit and its latency."""

    hits: list[float]
    misses: list[float]
    hit_posts: list[float]  # the POST alone (upload, hash, probe, queue) of each hit
    tiers: dict[str, int]  # cache hits per tier during the pass
    engine_calls: int

    @property
    def hit_rate(self) -> float:
        return len(self.hits) / (len(self.hits) + len(self.misses))


def _counters(stats: dict[str, Any]) -> tuple[dict[str, int], int]:
    tiers = {name: int(tier.get("hits", 0)) for name, tier in stats.get("cache", {}).items()}
    calls = sum(int(e.get("calls", 0)) for e in stats.get("engines", {}).values())
    return tiers, calls


async def replay(server: Server, files: list[Path], order: list[int], progress: Progress) -> Phase:
    """Submit ``files[i]`` for each i of ``order``, one at a time, each waited for to its transcript."""
    hits: list[float] = []
    misses: list[float] = []
    posts: list[float] = []
    async with Api(server.base, connections=4) as api:
        tiers0, calls0 = _counters(await api.get("/v1/admin/stats"))
        for n, index in enumerate(order, 1):
            job, seconds, post = await api.transcribe(files[index], language="en")
            if job["status"] != "completed":
                raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
            (hits if job["cached"] else misses).append(seconds)
            if job["cached"]:
                posts.append(post)
            if n % 50 == 0:
                progress.step(f"{n}/{len(order)} submitted, {len(hits)} hits")
        tiers1, calls1 = _counters(await api.get("/v1/admin/stats"))
    return Phase(hits, misses, posts, {t: tiers1[t] - tiers0.get(t, 0) for t in tiers1}, calls1 - calls0)


def _p(values: list[float]) -> str:
    return f"p50 {ms(percentile(values, 50))}, p95 {ms(percentile(values, 95))}"


def _rows(first: Phase, again: Phase, repeats: float) -> list[Row]:
    p95 = percentile(first.hits, 95)
    p95_again = percentile(again.hits, 95)
    miss_p50 = percentile(first.misses, 50)
    tiers = ", ".join(f"{t} {n}" for t, n in again.tiers.items())
    return [
        Row("cache", f"hit rate, {SUBMISSIONS} submissions, {repeats:.0%} repeats", f"{first.hit_rate:.1%}",
            f"{repeats:.0%} repeats", first.hit_rate / repeats, "of repeats", "= repeat fraction",
            abs(first.hit_rate - repeats) < 0.005),
        Row("cache", "POST to transcript: hit (L1) vs miss (engine)", _p(first.hits), _p(first.misses),
            miss_p50 / percentile(first.hits, 50), "× faster (p50)", "hit p95 < 50 ms", p95 < TARGET_HIT_P95_S),
        Row("cache", "hit: the POST alone (upload, hash, probe, queue) within the above", _p(first.hit_posts),
            _p(first.hits), percentile(first.hit_posts, 50) / percentile(first.hits, 50), "of the hit (p50)"),
        Row("cache", "engine calls made by the repeats (whole run after the restart)", str(again.engine_calls),
            f"{first.engine_calls} for the first-time audio", None, "", "0", again.engine_calls == 0),
        Row("cache", f"after a restart (L1 warmed from L3): hit rate, POST to transcript; hits by tier: {tiers}",
            f"{again.hit_rate:.1%}; {_p(again.hits)}", f"before the restart: {_p(first.hits)}",
            miss_p50 / percentile(again.hits, 50), "× faster than a miss (p50)",
            "100 %; hit p95 < 50 ms", again.hit_rate == 1.0 and p95_again < TARGET_HIT_P95_S),
    ]


def run(progress: Progress, repeat: int) -> Outcome:
    order = workload(SUBMISSIONS, REPEAT_FRACTION)
    files = distinct_clips(max(order) + 1, tag="cache")
    progress.step(f"{len(files)} distinct clips, {SUBMISSIONS} submissions")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as data:
        with local_server(Path(data)) as server:
            first = asyncio.run(replay(server, files, order, progress))
        progress.step(f"hit rate {first.hit_rate:.1%}; restarting on the same data directory")
        with local_server(Path(data)) as server:
            again = asyncio.run(replay(server, files, order, progress))
    repeats = 1 - (max(order) + 1) / SUBMISSIONS
    percentiles = {"p50": 50, "p95": 95, "p99": 99}
    chart = Chart("cache_latency", "POST to completed transcript, cache miss vs hit", list(percentiles),
                  {"miss (engine)": [percentile(first.misses, q) * 1000 for q in percentiles.values()],
                   "hit (L1)": [percentile(first.hits, q) * 1000 for q in percentiles.values()],
                   "hit after restart": [percentile(again.hits, q) * 1000 for q in percentiles.values()]},
                  "milliseconds")
    return Outcome("cache", _rows(first, again, repeats), [chart],
                   {"first": first.__dict__, "after_restart": again.__dict__})
