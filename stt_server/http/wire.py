"""JSON answers for requests aiohttp's HTTP parser refuses, before the app ever sees them.

A malformed request line, an over-long or invalid header, too many headers, a bad Content-Length
or broken chunked framing is answered by aiohttp's connection handler itself, with the parser's
message (the request's bytes quoted) as plain text: no middleware runs and no ``on_response_prepare``
hook sees it (such a request has no route). aiohttp offers no setting for this answer, so the
connection handler is subclassed: its ``handle_error`` answers in the house JSON shape
(:func:`stt_server.errors.malformed`: a few safe words, code ``malformed_request``) with the
security headers every response carries, and the connection closed. A server only uses it
through this module's :class:`AppRunner` (``web.run_app`` takes no runner), hence :func:`serve`.

Chunked framing that breaks in the middle of a body is the other gap: the C parser drops the body
it was filling without failing it, so the handler reading it waits until the body-rate deadline
(408) instead of hearing of the fault. :meth:`JSONErrorHandler.data_received` fails that body, as
aiohttp's pure-Python parser does, and the error middleware answers 400 ``malformed_request``. Once
a body has broken (its framing or its encoding), that answer ends the connection, and aiohttp does
not try to read the rest of the body after it (which raised again and logged a traceback).

aiohttp has no public hook for any of this: the subclasses lean on ``RequestHandler``'s message
queue and current request and on ``Server``'s arguments, as aiohttp 3.14 has them;
tests/test_parser_errors.py fails if they change.
"""

from __future__ import annotations

import asyncio
import signal
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from stt_server.errors import STTError, error_response, malformed, parse_fault
from stt_server.http.httpsec import secure

log = structlog.get_logger(__name__)


class JSONErrorHandler(RequestHandler):
    """aiohttp's per-connection handler, answering its own errors in JSON."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) and status < 500:  # the parser refused the request
            err: STTError = malformed(exc)
            log.info("http_request_malformed", status=status, error=err.message, peer=request.remote)
        else:  # an error that escaped the app's middleware (500, or 504 for a timeout)
            super().handle_error(request, status, exc, message)  # logs it; raises if an answer has begun
            err = STTError(HTTPStatus(status).phrase.lower())
        err.status = status  # aiohttp's status stands
        response = error_response(err)
        response.force_close()
        secure(response.headers)
        return response

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) == queued or not isinstance(refused := self._messages[-1][0], _ErrInfo):
            return
        # The body being filled is the last request parsed: still queued, or being handled.
        if len(self._messages) > 1:
            body = self._messages[-2][1]
        elif self._current_request is not None:
            body = self._current_request.content
        else:
            return
        if not body.is_eof() and body.exception() is None:  # the C parser dropped it: fail it
            broken = web.RequestPayloadError(parse_fault(refused.exc))
            broken.__cause__ = refused.exc
            body.set_exception(broken)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        body = request.content
        if body.exception() is not None and not body.is_eof():
            # The body broke (its framing or its encoding): nothing after it can be read, so this
            # answer is the connection's last, and nothing is read on ("lingering") after it.
            body.feed_eof()  # after the exception, so reads still raise
            self.close()
            if isinstance(resp, web.StreamResponse) and not resp.prepared:
                resp.force_close()
        return await super().finish_response(request, resp, start_time)


class JSONErrorServer(web.Server):
    """A ``web.Server`` whose connections are handled by :class:`JSONErrorHandler`."""

    def __call__(self) -> RequestHandler:
        return JSONErrorHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`JSONErrorServer`."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the app and freezes it
        return JSONErrorServer(made.request_handler, request_factory=made.request_factory,
                               handler_cancellation=made.handler_cancellation, loop=made._loop, **made._kwargs)


async def serve(app: web.Application, host: str, port: int, **runner_kwargs: Any) -> None:
    """What ``web.run_app`` does, with :class:`AppRunner`: serve until SIGINT or SIGTERM, then shut
    down in order (``on_shutdown``, the connections within ``shutdown_timeout``, clean-up)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = AppRunner(app, **runner_kwargs)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)  # a second signal ends the shutdown at once
        await runner.cleanup()
