"""The aiohttp application: routes, middleware and the services' lifecycle."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from .errors import error_middleware
from .routes import health, jobs, openai
from .services import SERVICES, EngineFactory, default_engines, open_services
from .settings import Settings

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def create_app(settings: Settings, engine_factory: EngineFactory = default_engines) -> web.Application:
    """Build the app; its services open on start-up and close on clean-up."""
    app = web.Application(middlewares=[error_middleware], client_max_size=1 << 20)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_services(settings, engine_factory) as services:
            app[SERVICES] = services
            yield
            services.accepting = False

    app.cleanup_ctx.append(services_ctx)
    app.add_routes(health.routes)
    app.add_routes(jobs.routes)
    app.add_routes(openai.routes)
    return app
