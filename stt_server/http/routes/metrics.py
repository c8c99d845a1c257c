"""GET /metrics: the Prometheus text format, one snapshot of the server's figures per scrape."""

from __future__ import annotations

from aiohttp import web

from stt_server.observability.looplag import LOOP_LAG
from stt_server.observability.metrics import METRICS
from stt_server.observability.prometheus import CONTENT_TYPE, Snapshot, exposition
from stt_server.services import SERVICES

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    counts = await svc.store.counts_by_status()  # the one figure that needs I/O, read before the scrape
    snapshot = Snapshot(svc, request.app[METRICS], counts, request.app.get(LOOP_LAG))
    return web.Response(body=exposition(snapshot), headers={"Content-Type": CONTENT_TYPE})
