"""Headers that keep a browser from being turned against the server: on every response, on files.

Every response gets ``X-Content-Type-Options: nosniff`` (a browser never guesses HTML or script
from bytes) and ``Referrer-Policy: no-referrer``. The page gets a strict Content-Security-Policy
built for it (:func:`page_csp`); everything else, uploaded audio and downloads included, gets
``sandbox`` with nothing allowed, so even a file opened directly runs no script on this origin.
Uploaded audio is served with a type named by the probed container, never by its file name.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Iterable, MutableMapping
from urllib.parse import quote

from aiohttp import web

# The demuxers media.probe accepts, by the type a browser plays them as.
_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "mov": "audio/mp4", "mp4": "audio/mp4", "m4a": "audio/mp4",
    "matroska": "audio/webm", "webm": "audio/webm",
}
OCTET_STREAM = "application/octet-stream"
FILE_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"


def audio_content_type(container: str | None) -> str:
    """The Content-Type for audio probed as ``container`` (FFmpeg's demuxer name, e.g. ``mov,mp4,m4a``)."""
    for name in (container or "").split(","):
        if name in _AUDIO_TYPES:
            return _AUDIO_TYPES[name]
    return OCTET_STREAM


def content_disposition(disposition: str, filename: str) -> str:
    """``inline`` or ``attachment`` with ``filename`` as RFC 6266 and RFC 5987 have it.

    The plain ``filename`` parameter gets an ASCII stand-in with nothing that could end the quoted
    string or start another parameter; ``filename*`` carries the real name, percent-encoded UTF-8.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".") or "download"
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:150]
    encoded = quote(name[:150], safe="")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _script_hashes(html: str) -> Iterable[str]:
    for body in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.S):
        yield "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


def page_csp(html: str) -> str:
    """The page's policy: its own files only; its inline scripts (the import map) allowed by hash."""
    scripts = " ".join(["'self'", *_script_hashes(html)])
    return ("default-src 'self'; script-src " + scripts + "; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def secure(headers: MutableMapping[str, str]) -> None:
    """Add the headers every response carries (a response's own CSP is kept)."""
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers.setdefault("Content-Security-Policy", FILE_CSP)
    headers.setdefault("X-Frame-Options", "DENY")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: :func:`secure` on every response the app answers."""
    secure(response.headers)
