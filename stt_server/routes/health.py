"""Liveness, readiness, the model list and the operators' stats."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from ..errors import Unavailable, error_response
from ..limits import STREAM_GATE, UPLOAD_GATE
from ..looplag import LOOP_LAG
from ..metrics import METRICS
from ..services import SERVICES, Services

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. 200 while loading and while shutting down too."""
    return web.json_response({"status": "ok"})


async def _not_ready(svc: Services) -> list[str]:
    """What keeps the server from taking work; empty when it is ready."""
    problems = [] if svc.accepting else ["shutting down"]
    if svc.startup_error:
        problems.append(svc.startup_error)
    problems += [f"engine {n} is loading" for n, e in svc.engines.items()
                 if not (svc.engines_started and e.ready) and not svc.startup_error]
    try:
        await asyncio.wait_for(svc.store.schema_version(), timeout=2.0)
    except Exception:  # noqa: BLE001 - any failure of the probe means "store not usable"
        problems.append("the store is not open")
    return problems


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer: 200 when the store is open, engines ready, not shutting down; else 503."""
    svc = request.app.get(SERVICES)
    problems = ["starting"] if svc is None else await _not_ready(svc)
    if svc is None or problems:  # answered, not raised: a probe's 503 is not a failure worth a warning
        return error_response(Unavailable("not ready: " + "; ".join(problems), headers={"Retry-After": "5"}))
    return web.json_response({"status": "ready", "engines": {n: e.ready for n, e in svc.engines.items()}})


def _oldest(svc: Services) -> dict[str, object] | None:
    """The job that has waited longest, and for how long."""
    entry = svc.queue.oldest()
    if entry is None:
        return None
    return {"job_id": entry.job_id, "priority": entry.priority,
            "waiting_s": round(max(0.0, time.time() - entry.enqueued_at), 3)}


@routes.get("/v1/admin/stats")
async def admin_stats(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return web.json_response({
        "uptime_s": round(time.time() - svc.started_at, 3),
        "queue": {"depth": len(svc.queue), "by_priority": svc.queue.depth_by_priority(),
                  "max_queued": svc.queue.max_queued, "oldest": _oldest(svc)},
        "workers": {"total": svc.workers.count, "busy": svc.workers.busy,
                    "running": svc.workers.running_ids()},
        "jobs": await svc.store.counts_by_status(),
        "cache": svc.cache.stats() if svc.cache else {},
        "engines": {name: engine.stats() for name, engine in svc.engines.items()},
        "events": dict(svc.bus.counts),
        "metrics": request.app[METRICS].summary() if METRICS in request.app else {},
        "event_loop": request.app[LOOP_LAG].summary() if LOOP_LAG in request.app else {},
        "uploads": request.app[UPLOAD_GATE].stats() if UPLOAD_GATE in request.app else {},
        "event_streams": request.app[STREAM_GATE].stats() if STREAM_GATE in request.app else {},
    })
