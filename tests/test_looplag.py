"""The event-loop lag monitor: a blocked loop shows up as lag, in admin stats and in /metrics."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from stt_server.observability.looplag import LOOP_LAG, LoopLagMonitor


def test_summary_of_observations() -> None:
    monitor = LoopLagMonitor(interval_s=0.1, window=3)
    assert monitor.summary()["p99_s"] is None
    for lateness in (0.001, 0.002, -0.001, 0.5, 0.003, 0.004, 0.002):
        monitor.observe(lateness)
    summary = monitor.summary()
    assert summary["max_s"] == 0.5 and summary["samples"] == 7
    assert summary["recent_max_s"] == 0.004  # the window keeps the last three
    assert summary["p50_s"] == 0.003


async def test_a_blocked_loop_is_measured() -> None:
    monitor = LoopLagMonitor(interval_s=0.02)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    time.sleep(0.25)  # blocking the loop on purpose
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 0.2 <= monitor.max_s < 1.0


async def test_lag_is_in_admin_stats_and_metrics(client: TestClient) -> None:
    await asyncio.sleep(0.25)  # a couple of samples
    assert client.server.app[LOOP_LAG].samples >= 1
    stats = await (await client.get("/v1/admin/stats")).json()
    assert set(stats["event_loop"]) >= {"max_s", "p50_s", "p99_s", "samples"}
    text = await (await client.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("stt_event_loop_lag_p50_seconds", "stt_event_loop_lag_p99_seconds", "stt_event_loop_lag_max_seconds"):
        assert families[name].type == "gauge" and families[name].samples[0].value >= 0
