"""The real app on a real loopback port, served from a background thread with its own event loop.

For clients that block (schemathesis drives ``requests``): they run in the test's thread while the
server answers in its own.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from aiohttp import web

from stt_server.app import create_app
from stt_server.http.wire import AppRunner
from stt_server.settings import Settings
from tests.serverproc import free_port


@contextmanager
def serving(settings: Settings, **app_kwargs: Any) -> Iterator[str]:
    """Serve ``create_app(settings, **app_kwargs)`` until the block ends; yields the base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner: list[AppRunner] = []

    async def start() -> None:
        app_runner = AppRunner(create_app(settings, **app_kwargs), shutdown_timeout=5.0)
        await app_runner.setup()
        await web.TCPSite(app_runner, "127.0.0.1", port).start()
        runner.append(app_runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        finally:
            started.set()
        loop.run_forever()
        loop.run_until_complete(runner[0].cleanup() if runner else asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=run, name="live-app", daemon=True)
    thread.start()
    started.wait(60)
    if not runner:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        raise RuntimeError("the app did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
