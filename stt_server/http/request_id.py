"""Request ids: taken from ``X-Request-ID`` (or made), bound into every log line, echoed back.

The id is bound with structlog's contextvars for the handler's duration, so the lines a request
writes carry it; the EventBus stamps it into the events emitted meanwhile (``job.created``), and
the worker binds it again when it runs the job, so the pipeline's lines carry it too.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Awaitable, Callable

import structlog
from aiohttp import web

from stt_server.observability.metrics import METRICS, route_label

HEADER = "X-Request-ID"
# aiohttp >= 3.12 has typed request keys; older versions take the plain string.
REQUEST_ID: "web.RequestKey[str]" = (
    web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id")  # type: ignore[assignment]
_VALID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_from(header: str | None) -> str:
    """The caller's id when it is short and plain (it goes into logs), else a fresh one."""
    if header and _VALID.fullmatch(header):
        return header
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind ``request_id`` for the request's log lines; when it ends, write one access line and
    record its latency by route and status (outermost, so it sees the final status)."""
    rid = request_id_from(request.headers.get(HEADER))
    request[REQUEST_ID] = rid
    began = time.perf_counter()
    status = 500
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's convention)
            raise
        finally:
            route = route_label(request)
            seconds = time.perf_counter() - began
            line = log.debug if route in QUIET_ROUTES else log.info  # probes poll: keep them out
            line("http_request", method=request.method, route=route, status=status, seconds=round(seconds, 4))
            collector = request.app.get(METRICS)
            if collector is not None:
                collector.observe_http(request.method, route, status, seconds)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, streamed or not, error or not, names its request."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid
