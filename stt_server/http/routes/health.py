"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from aiohttp import web

from stt_server.errors import Unavailable, error_response
from stt_server.services import SERVICES, Services

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
    default = svc.settings.engine.default
    if not svc.startup_error and not (svc.engines_started and svc.engine_states().get(default)):
        problems.append(f"engine {default} is loading")
    try:
        await asyncio.wait_for(svc.store.schema_version(), timeout=2.0)
    except Exception:  # noqa: BLE001 - any failure of the probe means "store not usable"
        problems.append("the store is not open")
    return problems


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer: 200 when the store is open, the default engine ready, not shutting
    down; else 503. Every engine's state is reported; only the default one is required."""
    svc = request.app.get(SERVICES)
    problems = ["starting"] if svc is None else await _not_ready(svc)
    if svc is None or problems:  # answered, not raised: a probe's 503 is not a failure worth a warning
        return error_response(Unavailable("not ready: " + "; ".join(problems), headers={"Retry-After": "5"}))
    return web.json_response({"status": "ready", "engines": svc.engine_states()})
