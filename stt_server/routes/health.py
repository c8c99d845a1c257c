"""Liveness, readiness, the model list and the operators' stats."""

from __future__ import annotations

import time

from aiohttp import web

from ..errors import Unavailable
from ..services import SERVICES

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    svc = request.app.get(SERVICES)
    if svc is None or not svc.ready:
        raise Unavailable("not ready: starting, loading the model or shutting down")
    return web.json_response({"status": "ready", "engines": {n: e.ready for n, e in svc.engines.items()}})


@routes.get("/v1/admin/stats")
async def admin_stats(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return web.json_response({
        "uptime_s": round(time.time() - svc.started_at, 3),
        "queue": {"depth": len(svc.queue), "by_priority": svc.queue.depth_by_priority(),
                  "max_queued": svc.queue.max_queued},
        "workers": {"total": svc.workers.count, "busy": svc.workers.busy,
                    "running": svc.workers.running_ids()},
        "jobs": await svc.store.counts_by_status(),
        "cache": svc.cache.stats() if svc.cache else {},
        "engines": {name: engine.stats() for name, engine in svc.engines.items()},
        "events": dict(svc.bus.counts),
    })
