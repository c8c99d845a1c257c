"""Who the caller is (for the web page: sign-in, and whether to show the dashboard), and signed audio links."""

from __future__ import annotations

import time

from aiohttp import web

from stt_server.http.auth import PRINCIPAL, ROLE, owned_job
from stt_server.services import SETTINGS, STORE
from stt_server.http.signedurl import UrlSigner, audio_url

SIGNER: web.AppKey[UrlSigner] = web.AppKey("url_signer", UrlSigner)
routes = web.RouteTableDef()


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    """The key's id and role; with no keys configured, an anonymous admin and ``keys_required: false``."""
    return web.json_response({"key_id": request.get(PRINCIPAL), "role": request.get(ROLE, "user"),
                              "keys_required": bool(request.app[SETTINGS].auth.keys)})


@routes.post("/v1/jobs/{id}/audio-url")
async def audio_link(request: web.Request) -> web.Response:
    """A link to the job's audio that works without a header for a few minutes (for <audio src>)."""
    job = await owned_job(request, request.app[STORE], request.match_info["id"])
    params, expires = request.app[SIGNER].sign(job.id, request.get(PRINCIPAL) or "", time.time())
    return web.json_response({"url": audio_url(job.id, params), "expires_at": expires})
