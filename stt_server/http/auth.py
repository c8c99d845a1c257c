"""Who is asking: API keys on every request, roles, job ownership, and where the server may listen.

With keys configured, every route but the probes, the UI's files and the API description needs
``Authorization: Bearer <key>`` (a job's audio also takes a short-lived signed link instead, see
signedurl.py, because the page's <audio> element cannot send a header); ``/metrics`` and ``/v1/admin/*`` need an admin key; a user key
sees only the jobs it made (another's job answers 404, as if it did not exist). With no keys,
nobody is asked, and the server keeps to loopback unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from stt_server.http.apikeys import ApiKey, match_key
from stt_server.errors import Forbidden, NotFound, Unauthorized
from stt_server.jobs.job import Job
from stt_server.jobs.store import Store
from stt_server.settings import Settings
from stt_server.http.signedurl import UrlSigner

log = structlog.get_logger(__name__)

# aiohttp >= 3.12 has typed request keys; older versions take the plain string.
_Key = getattr(web, "RequestKey", None)
PRINCIPAL: "web.RequestKey[str]" = _Key("principal_id", str) if _Key else "principal_id"  # type: ignore[assignment]
ROLE: "web.RequestKey[str]" = _Key("role", str) if _Key else "role"  # type: ignore[assignment]

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
ADMIN_PATHS = frozenset({"/metrics"})
ADMIN_PREFIXES = ("/v1/admin/",)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stt_server"'}
SIGNED_ROUTES = frozenset({"/v1/jobs/{id}/audio"})  # route templates that take a signed link

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def is_admin_only(path: str) -> bool:
    return path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(request: web.Request, keys: Sequence[ApiKey]) -> ApiKey:
    """The key the request carries, or Unauthorized."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", headers=CHALLENGE)
    key = match_key(token, keys)
    if key is None:
        raise Unauthorized("invalid API key", headers=CHALLENGE, code="invalid_api_key")
    return key


def signed_key(request: web.Request, keys: Sequence[ApiKey], signer: UrlSigner) -> ApiKey | None:
    """The key a signed link was made for, when the request is one (and carries no Authorization).

    Unauthorized when the link is expired, altered, for another job, or its key is no longer configured."""
    query = request.query
    if "sig" not in query or "Authorization" in request.headers:
        return None
    resource = request.match_info.route.resource
    if resource is None or resource.canonical not in SIGNED_ROUTES:
        return None
    key_id = query.get("kid", "")
    key = next((k for k in keys if k.id == key_id), None)
    repeated = any(len(query.getall(name, [])) != 1 for name in ("kid", "exp", "sig"))
    if key is None or repeated or not signer.verify(request.match_info.get("id", ""), key_id, query.get("exp", ""),
                                        query.get("sig", ""), time.time()):
        raise Unauthorized("this link has expired or is not valid; open the job again for a new one",
                           headers=CHALLENGE, code="invalid_signature")
    return key


def auth_middleware(keys: Sequence[ApiKey], signer: UrlSigner | None = None) -> Middleware:
    """The middleware for these keys; with none, every request acts as an anonymous admin."""
    keys = tuple(keys)
    signer = signer or UrlSigner()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not keys:
            request[ROLE] = "admin"
            return await handler(request)
        if is_public(request.path):
            return await handler(request)
        key = signed_key(request, keys, signer) or authenticate(request, keys)
        if is_admin_only(request.path) and key.role != "admin":
            raise Forbidden("this route needs an admin API key")
        request[PRINCIPAL] = key.id
        request[ROLE] = key.role
        return await handler(request)

    return middleware


def owner_scope(request: web.Request) -> str | None:
    """Whose jobs the request may see: its key's id, or None for all (admin, or no keys configured)."""
    if request.get(ROLE) == "admin":
        return None
    return request.get(PRINCIPAL) or ""  # no principal (never the case past the middleware): nothing


async def owned_job(request: web.Request, store: Store, job_id: str) -> Job:
    """The job if it exists and the request may see it; otherwise 404 (never 403: ids stay secret)."""
    job = await store.get_job(job_id)
    scope = owner_scope(request)
    if job is None or (scope is not None and job.owner != scope):
        raise NotFound(f"no job with id {job_id!r}", param="id")
    return job


# --------------------------------------------------------------------------- where to listen


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(settings: Settings) -> str | None:
    """Why the server must not listen where it is told to, or None when it may."""
    host = settings.server.host
    if settings.auth.keys or is_loopback(host) or settings.server.allow_unauthenticated_remote:
        return None
    return (f"refusing to listen on {host!r} without API keys: anyone who can reach it could use the "
            "API. Configure keys in [auth] (see `stt-server hash-key`), listen on 127.0.0.1, or pass "
            "--allow-insecure-bind (server.allow_unauthenticated_remote = true) if something in front "
            "of the server authenticates.")


def log_auth_mode(settings: Settings) -> None:
    """Say at start-up how requests are authenticated, and where that leaves the server."""
    keys = settings.auth.keys
    host = settings.server.host
    if keys:
        log.info("auth_enabled", keys=len(keys), admins=sum(k.role == "admin" for k in keys), host=host)
    elif is_loopback(host):
        log.warning("auth_disabled", host=host,
                    detail=f"no API keys configured: listening on {host} only, without authentication")
    else:
        log.warning("auth_disabled_remote", host=host,
                    detail=f"no API keys configured and listening on {host}: allowed explicitly, "
                           "nothing authenticates requests")
