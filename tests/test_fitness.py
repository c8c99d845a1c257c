"""Fitness functions: the performance targets of issue 9 that CI holds the server to, as ratios or budgets
that do not depend on how fast the machine is. Each runs the real server as a subprocess through the
same code as ``python -m benchmarks --quick`` (benchmarks/fitness.py); ``pytest -m fitness`` runs
only these. The full benchmark, with baselines and charts, is ``python -m benchmarks``.
"""

from __future__ import annotations

import pytest

from benchmarks import fitness, scenario_ui
from benchmarks.scenario_memory import TARGET_MB
from benchmarks.scenario_remote import TARGET_EFFICIENCY
from tests.test_ui_assets import FIRST_LOAD_BUDGET

pytestmark = pytest.mark.fitness


def test_parallel_chunks_reach_most_of_the_ideal_speedup() -> None:
    """A 7-minute file (16 chunks) through the remote engine, the fake upstream answering each chunk
    after a fixed 3 s: one chunk at a time, then 8 at once. serial / parallel ≥ 0.8 × 8.

    Why 3 s and not less: see ``benchmarks.fitness.SPEEDUP_LATENCY``."""
    s = fitness.parallel_speedup()
    assert s.calls >= 2 * s.concurrency, s
    assert s.efficiency >= TARGET_EFFICIENCY, (
        f"speedup {s.speedup:.2f}× of an ideal {s.ideal_speedup:.1f}× ({s.efficiency:.2f} of ideal): "
        f"one chunk at a time {s.serial_s:.2f} s, {s.concurrency} at once {s.parallel_s:.2f} s "
        f"for {s.calls} chunks of {fitness.SPEEDUP_LATENCY.fixed_s:g} s upstream latency each")


def test_a_cache_hit_makes_no_engine_call() -> None:
    """The same file twice to one server: the second job is served from the cache, no upstream request."""
    c = fitness.cache_hit()
    assert c.first_calls >= 1, c
    assert c.repeat_cached and c.repeat_calls == 0, c


def test_peak_memory_of_a_30_minute_job_stays_under_budget() -> None:
    """A 30-minute WAV on the embedded engine (tiny.en loaded, the shipped settings): the server
    process's high-water resident memory (VmHWM) stays under 300 MB."""
    p = fitness.memory_peak()
    assert p.peak_mb < TARGET_MB, (
        f"peak {p.peak_mb:.0f} MB (idle {p.idle_mb:.0f} MB) for {p.minutes:g} min, {p.chunks} chunks")


def test_first_load_of_the_web_page_stays_under_50_kb() -> None:
    """/ and everything it loads eagerly, gzip, from the real server over TCP (every header counted)."""
    load = scenario_ui.measure()
    assert load.total < FIRST_LOAD_BUDGET, f"{load.total} bytes on the wire: {load.by_url}"
