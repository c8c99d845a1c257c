"""The aiohttp application: routes, middleware and the services' lifecycle."""

from __future__ import annotations

from typing import AsyncIterator

from aiohttp import web

from stt_server.http import openapi
from stt_server.http.auth import auth_middleware
from stt_server.errors import error_middleware
from stt_server.http.httpsec import security_headers
from stt_server.http.descriptors import quiet_accept_errors
from stt_server.http.limits import STREAM_GATE, UPLOAD_GATE, StreamGate, UploadGate
from stt_server.observability.looplag import setup_loop_lag
from stt_server.observability.metrics import METRICS, MetricsCollector
from stt_server.http.origin import origin_middleware
from stt_server.http.request_id import echo_request_id, request_id_middleware
from stt_server.http.routes import admin, health, jobs, openai, session
from stt_server.http.routes.metrics import routes as metrics_routes
from stt_server.http.routes.ui import setup_ui
from stt_server.services import SERVICES, EngineFactory, default_engines, open_services, publish
from stt_server.settings import Settings
from stt_server.http.signedurl import UrlSigner


def create_app(settings: Settings, engine_factory: EngineFactory = default_engines) -> web.Application:
    """Build the app; its services open on start-up and close on clean-up."""
    # Outermost first: the request id wraps everything, metrics see the error middleware's statuses,
    # and the error middleware shapes authentication's 401 and 403.
    signer = UrlSigner()
    app = web.Application(middlewares=[request_id_middleware, error_middleware, origin_middleware(settings),
                                       auth_middleware(settings.auth.keys, signer)],
                          client_max_size=1 << 20)
    app[session.SIGNER] = signer
    collector = app[METRICS] = MetricsCollector()
    app[UPLOAD_GATE] = UploadGate(settings.limits)
    app[STREAM_GATE] = StreamGate(settings.limits)
    app.on_startup.append(quiet_accept_errors)
    setup_loop_lag(app)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        # The engines load after the server listens: /healthz answers, /readyz is 503 until then.
        async with open_services(settings, engine_factory, background=True,
                                 listeners=[collector.on_event]) as services:
            publish(app, services)
            yield
            services.accepting = False

    async def stop_accepting(app: web.Application) -> None:
        """First step of shutdown, before clean-up: readiness goes 503 and uploads are refused."""
        services = app.get(SERVICES)
        if services is not None and services.accepting:
            services.accepting = False
            await services.bus.emit("server.stopping")
            await services.workers.drain(settings.queue.shutdown_grace_s)

    app.cleanup_ctx.append(services_ctx)
    app.on_shutdown.append(stop_accepting)
    app.on_response_prepare.append(echo_request_id)
    app.on_response_prepare.append(security_headers)
    app.add_routes(health.routes)
    app.add_routes(metrics_routes)
    app.add_routes(jobs.routes)
    app.add_routes(session.routes)
    setup_ui(app)
    app.add_routes(openai.routes)
    app.add_routes(admin.routes)
    app.add_routes(openapi.routes)
    return app
