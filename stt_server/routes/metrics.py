"""GET /metrics: the Prometheus text format, from the services' state and the MetricsCollector."""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

import structlog
from aiohttp import web

from ..job import Status
from ..looplag import LOOP_LAG, LoopLagMonitor
from ..metrics import METRICS
from ..metrics_text import CONTENT_TYPE, Exposition, add_stats
from ..services import SERVICES, Services

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

CACHE_COUNTERS = ("hits", "misses", "errors", "evictions")


def process_figures() -> dict[str, float]:
    """Memory, CPU and file descriptors of this process (Linux /proc when present, else getrusage)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    figures = {"max_resident_memory_bytes": float(usage.ru_maxrss * scale),
               "cpu_seconds_total": usage.ru_utime + usage.ru_stime}
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            size, resident = (int(x) for x in fh.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        figures.update(virtual_memory_bytes=float(size * page), resident_memory_bytes=float(resident * page),
                       open_fds=float(len(os.listdir("/proc/self/fd"))))
    except (OSError, ValueError):
        figures["resident_memory_bytes"] = figures["max_resident_memory_bytes"]
    return figures


async def _jobs_and_queue(expo: Exposition, svc: Services) -> None:
    counts = await svc.store.counts_by_status()
    fam = expo.family("stt_jobs", "gauge", "Jobs in the store by status")
    for status in Status:
        fam.add(counts.get(status.value, 0), (("status", status.value),))
    fam = expo.family("stt_queue_depth", "gauge", "Jobs waiting in the queue by priority")
    for priority, depth in svc.queue.depth_by_priority().items():
        fam.add(depth, (("priority", priority),))
    expo.gauge("stt_queue_max", "Queued jobs allowed before uploads get 429", svc.queue.max_queued)
    expo.gauge("stt_workers", "Job workers", svc.workers.count)
    expo.gauge("stt_workers_busy", "Job workers running a job", svc.workers.busy)
    fam = expo.family("stt_events_total", "counter", "Domain events emitted by name since start")
    for name, n in sorted(svc.bus.counts.items()):
        fam.add(n, (("event", name),))


def _cache(expo: Exposition, svc: Services) -> None:
    if svc.cache is None:
        return
    for tier, row in svc.cache.stats().items():
        labels = (("tier", tier),)
        for key in CACHE_COUNTERS:
            expo.family(f"stt_cache_{key}_total", "counter", f"Cache {key} per tier").add(row.get(key, 0), labels)
        rest = {k: v for k, v in row.items() if k not in CACHE_COUNTERS}
        add_stats(expo, "stt_cache", "Cache tier figure", rest, labels)


def _engines(expo: Exposition, svc: Services) -> None:
    for name, engine in svc.engines.items():
        labels = (("engine", name),)
        expo.gauge("stt_engine_ready", "1 once the engine can take work", engine.ready, labels)
        try:
            stats: dict[str, Any] = svc.dispatch[name].stats()
        except Exception:  # noqa: BLE001 - one engine's broken stats must not hide the rest
            log.exception("engine_stats_failed", engine=name)
            continue
        stats.pop("ready", None)
        add_stats(expo, "stt_engine", "Engine figure", stats, labels)


def _process(expo: Exposition, svc: Services) -> None:
    for key, value in process_figures().items():
        kind = "counter" if key.endswith("_total") else "gauge"
        expo.family(f"process_{key}", kind, f"Process {key.replace('_', ' ')}").add(value)
    expo.gauge("stt_uptime_seconds", "Seconds since the services opened", time.time() - svc.started_at)
    expo.gauge("stt_ready", "1 when /readyz answers 200", svc.ready)


def _loop_lag(expo: Exposition, monitor: LoopLagMonitor) -> None:
    summary = monitor.summary()
    fam = expo.family("stt_event_loop_lag_seconds", "gauge",
                      "How late the event loop woke a 0.1 s sleeper, over the last minute, by quantile")
    for quantile, key in (("0.5", "p50_s"), ("0.99", "p99_s")):
        fam.add(summary[key] or 0.0, (("quantile", quantile),))
    expo.gauge("stt_event_loop_lag_max_seconds", "The event loop's worst lag since start", summary["max_s"])


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    expo = Exposition()
    await _jobs_and_queue(expo, svc)
    request.app[METRICS].export(expo)
    _cache(expo, svc)
    _engines(expo, svc)
    _process(expo, svc)
    if LOOP_LAG in request.app:
        _loop_lag(expo, request.app[LOOP_LAG])
    return web.Response(body=expo.render().encode(), headers={"Content-Type": CONTENT_TYPE})
