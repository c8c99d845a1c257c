"""The operators' routes: the server's stats, and cache invalidation."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from stt_server.cache.keys import job_cache_keys
from stt_server.errors import BadRequest, NotFound, UnsupportedMediaType
from stt_server.http.limits import STREAM_GATE, UPLOAD_GATE
from stt_server.observability.looplag import LOOP_LAG
from stt_server.observability.metrics import METRICS
from stt_server.services import SERVICES, Services

routes = web.RouteTableDef()

SCOPES = ("key", "job_id", "engine", "model", "all")


async def _body(request: web.Request) -> dict[str, Any]:
    if request.can_read_body and request.content_type != "application/json":
        # A cross-site form or text/plain POST needs no preflight; a JSON one does.
        raise UnsupportedMediaType("send the body as application/json")
    try:
        body = await request.json() if request.can_read_body else {}
    except (ValueError, LookupError):  # bad JSON, bad UTF-8 (found by fuzzing), an unknown charset
        raise BadRequest("the body must be JSON") from None
    if not isinstance(body, dict) or not set(body) & set(SCOPES):
        raise BadRequest(f"say what to invalidate: one of {', '.join(SCOPES)}")
    unknown = set(body) - set(SCOPES)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
    for name, value in body.items():  # found by fuzzing: a list reached the SQL of L3
        if not isinstance(value, bool if name == "all" else str):
            raise BadRequest(f"{name} must be {'true or false' if name == 'all' else 'a string'}", param=name)
    return body


@routes.post("/v1/admin/cache/invalidate")
async def invalidate(request: web.Request) -> web.Response:
    """Invalidate by ``key``, by ``job_id``, by ``engine`` and/or ``model``, or ``all``, through every tier."""
    svc = request.app[SERVICES]
    body = await _body(request)
    if svc.cache is None:
        return web.json_response({"removed": 0, "scope": body})
    if body.get("all") is True:
        removed = await svc.cache.invalidate(everything=True)
    elif body.get("key"):
        removed = await svc.cache.invalidate(key=str(body["key"]))
    elif body.get("job_id"):
        job = await svc.store.get_job(str(body["job_id"]))
        if job is None:
            raise NotFound(f"no job with id {body['job_id']!r}", param="job_id")
        keys = job_cache_keys(job, svc.engines, await svc.store.chunk_cache_keys(job.id))
        removed = await svc.cache.invalidate(keys=keys)
    elif body.get("engine") or body.get("model"):
        removed = await svc.cache.invalidate(engine=body.get("engine"), model=body.get("model"))
    else:
        raise BadRequest("'all' must be true, or give a non-empty key, job_id, engine or model")
    await svc.bus.emit("cache.invalidated", body.get("job_id"), scope=body, removed=removed)
    return web.json_response({"removed": removed, "scope": body})


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
        "engines": svc.dispatch.stats(),
        "events": dict(svc.bus.counts),
        "metrics": request.app[METRICS].summary() if METRICS in request.app else {},
        "event_loop": request.app[LOOP_LAG].summary() if LOOP_LAG in request.app else {},
        "uploads": request.app[UPLOAD_GATE].stats() if UPLOAD_GATE in request.app else {},
        "event_streams": request.app[STREAM_GATE].stats() if STREAM_GATE in request.app else {},
    })
