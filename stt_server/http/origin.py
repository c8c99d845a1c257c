"""Which web pages may write, and which host names are served: refusing a browser's borrowed hands.

A page on another origin can make the user's browser POST a form (multipart needs no preflight)
or a ``text/plain`` body to this server; a site that rebinds its own name to 127.0.0.1 can even
read the answers. So writes carrying another ``Origin`` (or ``Sec-Fetch-Site: cross-site``) get 403,
and with no API keys only loopback names, the configured bind address and ``server.allowed_hosts``
are served (421 otherwise). Clients that send no ``Origin`` (curl, the SDKs, the CLI) are untouched.
"""

from __future__ import annotations

from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from stt_server.http.auth import is_loopback
from stt_server.errors import CrossSite, MisdirectedHost
from stt_server.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(host: str) -> str:
    """``[::1]:8000`` → ``::1``; ``Example.com:80`` → ``example.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Whether a keyless server answers requests naming ``host``: loopback names and addresses, or listed."""
    name = host_name(host).rstrip(".")
    return is_loopback(name) or name.endswith(".localhost") or name in allowed


def _endpoint(scheme: str, netloc: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        return "", None
    return (parts.hostname or "").rstrip("."), port or _DEFAULT_PORTS[scheme]


def same_origin(origin: str, host: str) -> bool:
    """Whether an ``Origin`` header names this server as the request reached it. Its scheme is taken
    as given: a proxy in front may end TLS, and the Host header says nothing of the scheme."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False  # "null" (sandboxed frames, file: pages) and anything odd
    theirs = _endpoint(parts.scheme, parts.netloc)
    return bool(theirs[0]) and theirs == _endpoint(parts.scheme, host)


def cross_site_refusal(method: str, fetch_site: str | None, origin: str | None, host: str,
                       own_names: frozenset[str] = frozenset()) -> str | None:
    """Why a request is refused as a cross-site write, or None (reads, and writes without Origin, pass).

    ``own_names`` are the names the server is reached by (``server.allowed_hosts``): pages there are
    its own even when a proxy in front rewrites the Host header."""
    if method.upper() in SAFE_METHODS:
        return None
    if origin is not None and (urlsplit(origin.strip()).hostname or "") in own_names:
        return None
    if (fetch_site or "").lower() == "cross-site":
        return "requests from other web sites may not change anything here"
    if origin is not None and not same_origin(origin, host):
        return "requests from other web pages (another Origin) may not change anything here"
    return None


def origin_middleware(settings: Settings) -> Middleware:
    """Refuse cross-site writes always, and unknown host names when no API keys are configured."""
    check_host = not settings.auth.keys
    own_names = frozenset(settings.server.allowed_hosts)
    allowed = own_names | {settings.server.host.lower()}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The header itself: aiohttp's request.host falls back to a (blocking) getfqdn(), and a
        # request without Host (HTTP/1.0) is no browser's, so no rebinding page's.
        host = request.headers.get("Host")
        if check_host and host is not None and not host_allowed(host, allowed):
            raise MisdirectedHost(f"this server does not answer for the host {host_name(host)!r}; "
                                  "add it to server.allowed_hosts if it should")
        refusal = cross_site_refusal(request.method, request.headers.get("Sec-Fetch-Site"),
                                     request.headers.get("Origin"), host or "", own_names)
        if refusal:
            raise CrossSite(refusal)
        return await handler(request)

    return middleware
