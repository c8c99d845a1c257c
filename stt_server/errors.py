"""The error hierarchy and the one middleware that turns errors into OpenAI-shaped JSON."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.http_exceptions import (BadHttpMethod, BadStatusLine, ContentEncodingError, ContentLengthError,
                                     DecompressSizeError, HttpProcessingError, InvalidHeader, InvalidURLError,
                                     LineTooLong, TransferEncodingError)

log = structlog.get_logger(__name__)


class STTError(Exception):
    """Base error: carries an HTTP status and the fields of the JSON error body."""

    status = 500
    type = "server_error"
    code: str | None = None
    default_param: str | None = None
    close_connection = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param if param is not None else self.default_param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(STTError):
    status = 400
    type = "invalid_request_error"


class MalformedRequest(BadRequest):
    """A request HTTP itself cannot read: its request line, its headers or its body's framing. The
    connection is closed after the answer (where a next request would begin is unknown)."""

    code = "malformed_request"
    close_connection = True


class InvalidAudio(BadRequest):
    code = "invalid_audio"
    default_param = "file"


class Unauthorized(STTError):
    status = 401
    type = "authentication_error"
    code = "missing_api_key"


class Forbidden(STTError):
    status = 403
    type = "permission_error"
    code = "admin_only"


class CrossSite(STTError):
    """A write sent by a web page of another origin (a cross-site form or fetch)."""

    status = 403
    type = "permission_error"
    code = "cross_site"


class MisdirectedHost(STTError):
    """A request naming a host this server does not answer for (a DNS-rebinding page)."""

    status = 421
    type = "invalid_request_error"
    code = "host_not_allowed"


class NotFound(STTError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(STTError):
    status = 409
    type = "conflict_error"
    code = "not_ready"


class Gone(STTError):
    """Something that existed and was deleted on purpose, such as a transcript past its retention."""

    status = 410
    type = "invalid_request_error"
    code = "expired"


class PayloadTooLarge(STTError):
    status = 413
    type = "invalid_request_error"
    code = "too_large"


class UnsupportedMediaType(STTError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RequestTimeout(STTError):
    """The client sent its request too slowly; the connection is closed after the answer."""

    status = 408
    type = "invalid_request_error"
    code = "too_slow"
    close_connection = True


class TooManyRequests(STTError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class Unavailable(STTError):
    status = 503
    type = "server_error"
    code = "unavailable"


class InsufficientStorage(STTError):
    status = 507
    type = "server_error"
    code = "spool_full"


class EngineError(STTError):
    """An engine failed to transcribe a chunk, and says what kind of failure it was.

    ``retryable``: trying again may help (a timeout, a 5xx, a 429), or not (a 400 stays a 400).
    ``against_upstream``: the failure speaks of the upstream's health and counts toward opening
    its circuit (a refused connection does; a 429 or a bad request does not). ``retry_after``:
    seconds the upstream asked us to wait. ``failure``: the failure in a word or two ("503",
    "timeout"). ``detail``: the upstream's own words, short. ``refused_format``: the upload
    format (its spec, e.g. ``opus@32k``) an upstream refused, so the runner can fall back. The
    dispatch runner reads these to retry or give up; the engine itself never retries.
    """

    status = 502
    type = "upstream_error"
    code = "engine_error"

    def __init__(self, message: str, *, retryable: bool = True, against_upstream: bool = False,
                 retry_after: float | None = None, failure: str = "", detail: str = "",
                 refused_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.refused_format = refused_format
        self.failure = failure or message
        self.retryable = retryable
        self.against_upstream = against_upstream
        self.retry_after = retry_after
        self.detail = detail


class StartupError(Exception):
    """The server cannot start as configured or installed; the command line prints it and exits 2."""


# aiohttp's parser messages quote the request's bytes and the parser's own wording; an answer names
# only the kind of fault. By the exception's class first, then by words of llhttp's reason (the C
# parser raises a plain BadHttpMessage for most faults; its reason is the text before ":\n").
_FAULTS_BY_CLASS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (LineTooLong, "request line or header too long"),
    (BadHttpMethod, "invalid method"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "invalid URL"),
    (InvalidHeader, "invalid header"),
    (TransferEncodingError, "bad chunked encoding"),
    (ContentLengthError, "bad Content-Length"),
    (DecompressSizeError, "body too large once decompressed"),
    (ContentEncodingError, "bad Content-Encoding"),
)
_FAULTS_BY_WORD = (("too many headers", "too many headers"), ("chunk", "bad chunked encoding"),
                   ("transfer-encoding", "bad Transfer-Encoding"), ("content-length", "bad Content-Length"),
                   ("header", "invalid header"), ("method", "invalid method"), ("version", "malformed request line"))


def parse_fault(exc: BaseException | None) -> str:
    """A few safe words for what aiohttp's parser refused, such as "bad chunked encoding"."""
    if isinstance(exc, web.RequestPayloadError) and exc.__cause__ is not None:
        exc = exc.__cause__  # a body's fault, wrapped with the parser's words in its message
    for kind, fault in _FAULTS_BY_CLASS:
        if isinstance(exc, kind):
            return fault
    reason = str(getattr(exc, "message", "")).partition(":\n")[0].lower()
    return next((fault for word, fault in _FAULTS_BY_WORD if word in reason), "malformed request")


def malformed(exc: BaseException | None) -> MalformedRequest:
    return MalformedRequest(f"bad HTTP request: {parse_fault(exc)}")


def error_response(err: STTError) -> web.Response:
    response = web.json_response(err.body(), status=err.status, headers=err.headers)
    if err.close_connection:
        response.force_close()
    return response


def _http_error(exc: web.HTTPException) -> web.Response:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status)
    body = {"error": {"message": exc.reason, "type": kind, "param": None, "code": code}}
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return web.json_response(body, status=exc.status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON in OpenAI's shape; nothing leaves as a stack trace."""
    try:
        return await handler(request)
    except web.RequestPayloadError as exc:  # the body broke off mid-way: bad framing or encoding
        return error_response(malformed(exc))
    except STTError as err:
        if err.status >= 500:
            log.warning("request_failed", path=request.path, status=err.status, error=err.message)
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except Exception:  # noqa: BLE001 - the last line of defence for the JSON contract
        log.exception("unhandled_error", path=request.path)
        return error_response(STTError("internal server error"))
