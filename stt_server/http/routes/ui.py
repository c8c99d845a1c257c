"""The web UI: index.html at ``/``, and fingerprinted static assets (a job's audio is with the job routes).

The page's files are the package ``stt_server.static`` (``static/`` in the repository, mapped into the
package at build time), found through importlib.resources in a wheel and an editable install alike;
a missing page stops the server at start-up. At start-up every file is read once, hashed and (where it pays)
gzipped, and served from memory as ``/static/<stem>.<hash8><ext>`` with a
year-long immutable cache lifetime. ``index.html`` is rewritten to point at
those names and gains an import map, so that ES modules importing
``./api.js`` load the fingerprinted file too; index.html itself is served
with ``Cache-Control: no-cache`` (revalidated by ETag on every load).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from aiohttp import web

from stt_server.errors import NotFound, StartupError
from stt_server.http.httpsec import page_csp

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
COMPRESSIBLE = {".js", ".css", ".html", ".svg", ".json", ".txt", ".map"}
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
# Static `import ... from "./x.js"` / `export ... from "./x.js"` / `import "./x.js"` (not dynamic import()).
STATIC_IMPORT = re.compile(r"""^\s*(?:import|export)\s(?:[^'"();]*?\sfrom\s*)?["']\./([\w.-]+\.js)["']""", re.M)
MARKER = "<!--importmap-->"
NOT_SERVED = {".py", ".pyc"}  # the package's own __init__.py


@dataclass(frozen=True)
class Asset:
    """One file as served: its bytes, and gzip bytes when gzip makes it smaller."""

    name: str
    url: str
    content_type: str
    body: bytes
    gzipped: bytes | None
    etag: str
    cache_control: str


@dataclass(frozen=True)
class StaticSite:
    """Everything the UI serves, built once from a directory."""

    index: Asset
    assets: dict[str, Asset]  # by the name in the URL: fingerprinted and plain both
    fingerprinted: dict[str, str]  # plain name → fingerprinted URL
    first_load: tuple[str, ...]  # plain names of the modules index.html loads eagerly
    csp: str  # the page's Content-Security-Policy


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:8]


def _asset(name: str, url: str, body: bytes, cache_control: str) -> Asset:
    suffix = Path(name).suffix
    gz = gzip.compress(body, compresslevel=9, mtime=0) if suffix in COMPRESSIBLE else None
    if gz is not None and len(gz) >= len(body):
        gz = None
    content_type = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Asset(name, url, content_type, body, gz, _digest(body), cache_control)


def fingerprint(name: str, digest: str) -> str:
    """``app.js`` + ``3f2a9c1b`` → ``app.3f2a9c1b.js``."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{digest}.{ext}" if dot else f"{name}.{digest}"


def static_imports(source: str) -> list[str]:
    """The sibling modules a module imports statically (what loads with it, before any import())."""
    return STATIC_IMPORT.findall(source)


def module_closure(entry: str, sources: dict[str, str]) -> list[str]:
    """``entry`` and every module it reaches by static imports, in discovery order."""
    seen: list[str] = []
    stack = [entry]
    while stack:
        name = stack.pop(0)
        if name in seen or name not in sources:
            continue
        seen.append(name)
        stack.extend(static_imports(sources[name]))
    return seen


def _rewrite_index(html: str, urls: dict[str, str], first_load: list[str]) -> str:
    """Point index.html at fingerprinted URLs; add the import map and module preloads."""
    for name, url in urls.items():
        html = re.sub(rf"""(["'])/static/{re.escape(name)}\1""", rf"\g<1>{url}\g<1>", html)
    imports = {f"/static/{name}": url for name, url in sorted(urls.items()) if name.endswith(".js")}
    block = f'<script type="importmap">{json.dumps({"imports": imports}, separators=(",", ":"))}</script>'
    block += "".join(f'<link rel="modulepreload" href="{urls[n]}">' for n in first_load[1:])
    return html.replace(MARKER, block) if MARKER in html else html.replace("</head>", block + "</head>", 1)


def page_files() -> Traversable:
    """Where the installed page is: the package ``stt_server.static``."""
    return resources.files("stt_server.static")


def build_site(directory: Traversable) -> StaticSite:
    """Read, hash and compress every file of ``directory`` (index.html last, once the names are known).

    StartupError when there is no index.html: a server without its page is a broken install."""
    files = {p.name: p.read_bytes() for p in sorted(directory.iterdir(), key=lambda p: p.name)
             if p.is_file() and not p.name.startswith(".") and Path(p.name).suffix not in NOT_SERVED
             } if directory.is_dir() else {}
    if "index.html" not in files:
        raise StartupError(f"the web page is missing: no index.html in {directory} (the package "
                           "stt_server.static); reinstall the package")
    html = files.pop("index.html").decode()
    assets: dict[str, Asset] = {}
    urls: dict[str, str] = {}
    for name, body in files.items():
        hashed = fingerprint(name, _digest(body))
        urls[name] = f"/static/{hashed}"
        assets[hashed] = _asset(name, urls[name], body, IMMUTABLE)
        assets[name] = _asset(name, f"/static/{name}", body, REVALIDATE)  # plain name: for hand-testing
    sources = {n: b.decode("utf-8", "replace") for n, b in files.items() if n.endswith(".js")}
    entry = re.search(r"""<script[^>]*type=["']module["'][^>]*src=["']/static/([\w.-]+\.js)["']""", html)
    first_load = module_closure(entry.group(1), sources) if entry else []
    page = _rewrite_index(html, urls, first_load)
    index = _asset("index.html", "/", page.encode(), REVALIDATE)
    return StaticSite(index, assets, urls, tuple(first_load), page_csp(page))


def _accepts(request: web.Request, coding: str) -> bool:
    """Whether Accept-Encoding allows ``coding`` (a q=0 refuses it)."""
    for part in request.headers.get("Accept-Encoding", "").lower().split(","):
        token, _, params = part.strip().partition(";")
        if token.strip() in (coding, "*"):
            q = params.strip()
            try:
                return not (q.startswith("q=") and float(q[2:] or 0) == 0)
            except ValueError:
                return False
    return False


def _send(request: web.Request, asset: Asset, extra: dict[str, str] | None = None) -> web.Response:
    use_gzip = asset.gzipped is not None and _accepts(request, "gzip")
    etag = f'"{asset.etag}{"-gz" if use_gzip else ""}"'
    headers = {"Cache-Control": asset.cache_control, "ETag": etag, "Vary": "Accept-Encoding", **(extra or {})}
    offered = {t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",")}
    if offered & {f'"{asset.etag}"', f'"{asset.etag}-gz"', "*"}:  # either encoding: same content
        return web.Response(status=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    body = asset.gzipped if use_gzip else asset.body
    response = web.Response(body=body, headers=headers)
    response.headers["Content-Type"] = asset.content_type
    return response


SITE: web.AppKey[StaticSite] = web.AppKey("ui_site", StaticSite)


async def index(request: web.Request) -> web.Response:
    site = request.app[SITE]
    return _send(request, site.index, {"Content-Security-Policy": site.csp})


async def static_file(request: web.Request) -> web.Response:
    asset = request.app[SITE].assets.get(request.match_info["name"])
    if asset is None:
        raise NotFound(f"no static file {request.match_info['name']!r}", param="name")
    return _send(request, asset)


def setup_ui(app: web.Application, static_dir: Traversable | None = None) -> None:
    """Build the static site once (from the installed package unless told otherwise) and add the UI's routes."""
    app[SITE] = build_site(static_dir or page_files())
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
