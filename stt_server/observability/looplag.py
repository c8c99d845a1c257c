"""Event-loop lag, measured from inside: a task sleeps ``interval_s`` and records how late it wakes.

A late wake-up means something held the loop (blocking work that should have left it in one hop,
or simply too much to do): every request waits that long too. Shown in ``/v1/admin/stats`` and
``/metrics``.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from aiohttp import web

from stt_server.observability.metrics import Reservoir

INTERVAL_S = 0.1
WINDOW = 600  # samples kept for the percentiles: the last minute at 0.1 s


class LoopLagMonitor:
    """The lateness of each wake-up: the recent ones for percentiles, and the worst since start."""

    def __init__(self, interval_s: float = INTERVAL_S, window: int = WINDOW) -> None:
        self.interval_s = interval_s
        self.recent = Reservoir(window)
        self.max_s = 0.0
        self.samples = 0

    def observe(self, lateness_s: float) -> None:
        lateness_s = max(0.0, lateness_s)
        self.recent.add(lateness_s)
        self.max_s = max(self.max_s, lateness_s)
        self.samples += 1

    async def run(self) -> None:
        """Sleep, wake, record; until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(self.interval_s)
            self.observe(loop.time() - began - self.interval_s)

    def summary(self) -> dict[str, Any]:
        """``max_s`` since start; ``p50_s``/``p99_s``/``recent_max_s`` over the last ``window`` samples."""
        recent = self.recent.summary((50.0, 99.0))
        values = list(self.recent.values)
        return {"interval_s": self.interval_s, "samples": self.samples, "max_s": round(self.max_s, 4),
                "recent_max_s": round(max(values), 4) if values else None,
                "p50_s": recent["p50"], "p99_s": recent["p99"]}


LOOP_LAG: web.AppKey[LoopLagMonitor] = web.AppKey("loop_lag", LoopLagMonitor)


def setup_loop_lag(app: web.Application, interval_s: float = INTERVAL_S) -> LoopLagMonitor:
    """Run a monitor while the app runs (a ``cleanup_ctx``: started on start-up, cancelled at clean-up)."""
    monitor = app[LOOP_LAG] = LoopLagMonitor(interval_s)

    async def running(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(monitor.run(), name="loop-lag")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(running)
    return monitor
