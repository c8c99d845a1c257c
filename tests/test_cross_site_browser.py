"""A web page on another origin, open in the user's browser, tries to use a keyless loopback server:
a cross-origin fetch of a multipart upload (no preflight needed), auto-submitted forms, and the
uploaded audio opened as a page. Headless Chromium against the real app, both sites on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from stt_server.app import create_app
from stt_server.settings import Settings
from tests.browser import browser_context
from tests.gated_engine import GatedEngine, factory_for, gated_settings
from tests.test_hostile import POLYGLOT

pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.timeout(900)

MakeServer = Callable[..., Awaitable[TestServer]]


def attacker_page(target: str) -> str:
    """Three attempts at once; each reports what the browser let it see."""
    return f"""<!doctype html><meta charset="utf-8"><title>free mp3s</title>
<form id="inv" method="POST" action="{target}/v1/admin/cache/invalidate" enctype="text/plain" target="f1">
  <input name='{{"all": true, "x": "' value='"}}'></form>
<form id="job" method="POST" action="{target}/v1/jobs" enctype="multipart/form-data" target="f2">
  <input name="priority" value="high"></form>
<iframe name="f1"></iframe><iframe name="f2"></iframe>
<script>
window.results = [];
(async () => {{
  const wav = await (await fetch('/polyglot.wav')).blob();
  const body = new FormData();
  body.append('file', wav, 'notes.html');
  try {{
    await fetch('{target}/v1/jobs', {{method: 'POST', body, mode: 'no-cors'}});
    window.results.push('fetch sent');
  }} catch (e) {{ window.results.push('fetch failed ' + e); }}
  document.getElementById('inv').submit();
  document.getElementById('job').submit();
  window.results.push('forms sent');
}})();
</script>"""


async def test_a_page_on_another_origin_changes_nothing(chromium: None, aiohttp_server: MakeServer,
                                                        settings: Settings, tmp_path: Path) -> None:
    engine = GatedEngine(go=False)
    target_app = create_app(gated_settings(settings), engine_factory=factory_for(engine))
    target = await aiohttp_server(target_app)
    base = str(target.make_url("")).rstrip("/")

    evil = web.Application()

    async def page_html(request: web.Request) -> web.Response:
        return web.Response(text=attacker_page(base), content_type="text/html")

    async def polyglot(request: web.Request) -> web.Response:
        return web.Response(body=POLYGLOT, content_type="audio/wav")

    evil.router.add_get("/", page_html)
    evil.router.add_get("/polyglot.wav", polyglot)
    evil_server = await aiohttp_server(evil)  # another port on loopback: another origin
    evil_url = str(evil_server.make_url("/"))

    posts: list[tuple[str, int]] = []
    all_answered = asyncio.Event()

    def on_response(response: Any) -> None:
        if response.url.startswith(base) and response.request.method == "POST":
            posts.append((response.url, response.status))
            if len(posts) == 3:
                all_answered.set()

    async with browser_context(tmp_path / "profile") as context:
        page = context.pages[0] if context.pages else await context.new_page()
        page.on("response", on_response)
        await page.goto(evil_url)
        await page.wait_for_function("window.results.length === 2", timeout=20_000)
        await asyncio.wait_for(all_answered.wait(), 30)  # every attempt reached the server
        results = await page.evaluate("window.results")

    assert results == ["fetch sent", "forms sent"], results
    assert len(posts) == 3 and all(status == 403 for _, status in posts), posts
    async with aiohttp.ClientSession() as http, http.get(base + "/v1/jobs") as response:
        assert (await response.json())["data"] == []  # nothing was uploaded


async def test_uploaded_audio_opened_as_a_page_runs_no_script(chromium: None, aiohttp_server: MakeServer,
                                                             settings: Settings, tmp_path: Path) -> None:
    target = await aiohttp_server(create_app(gated_settings(settings), engine_factory=factory_for(GatedEngine(go=False))))
    base = str(target.make_url("")).rstrip("/")
    form = aiohttp.FormData()
    form.add_field("file", POLYGLOT, filename="notes.html", content_type="text/html")
    async with aiohttp.ClientSession() as http, http.post(base + "/v1/jobs", data=form) as response:
        job = await response.json()
    dialogs: list[str] = []
    async with browser_context(tmp_path / "profile") as context:
        page = context.pages[0] if context.pages else await context.new_page()
        page.on("dialog", lambda d: dialogs.append(d.message))
        response = await page.goto(f"{base}/v1/jobs/{job['id']}/audio", wait_until="load")
        assert response is not None and response.headers["content-type"] == "audio/wav"
        assert await page.evaluate("document.contentType") != "text/html"
    assert dialogs == []
