"""Operators' actions: cache invalidation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound, UnsupportedMediaType
from ..pipeline import job_cache_keys
from ..services import SERVICES

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
        removed = await svc.cache.invalidate(keys=await job_cache_keys(svc.store, job, svc.engines))
    elif body.get("engine") or body.get("model"):
        removed = await svc.cache.invalidate(engine=body.get("engine"), model=body.get("model"))
    else:
        raise BadRequest("'all' must be true, or give a non-empty key, job_id, engine or model")
    await svc.bus.emit("cache.invalidated", body.get("job_id"), scope=body, removed=removed)
    return web.json_response({"removed": removed, "scope": body})
