"""Requests aiohttp's HTTP parser refuses, sent over raw sockets to a real server on loopback: the
runner in a thread, ``stt-server serve`` as a process, and that process on aiohttp's pure-Python
parser. Each answer is JSON in the house shape with the security headers, names the fault in a few
words (nothing of the request or of the parser's wording), and ends the connection."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web
from aiohttp.http_exceptions import (BadHttpMessage, BadHttpMethod, ContentEncodingError, InvalidHeader,
                                     LineTooLong, TransferEncodingError)

from stt_server.errors import parse_fault
from stt_server.settings import load_settings
from tests.liveapp import serving
from tests.serverproc import running_server

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
HOST = b"Host: 127.0.0.1\r\n"
BOUNDARY = "b0undary"
MULTIPART = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
FILE_PART = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
NOT_GZIP = b"this is not gzip at all"

# name: (request, fault on llhttp (aiohttp's C parser), fault on the pure-Python parser, if it answers)
CASES: dict[str, tuple[bytes, str, str | None]] = {
    "garbage request line": (b"GARBAGE\r\n\r\n", "invalid method", "invalid method"),
    "bad HTTP version": (b"GET / HTTP/9.x\r\n" + HOST + b"\r\n", "malformed request line", "malformed request line"),
    "space in the target": (b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n", "malformed request line",
                            "malformed request line"),
    "invalid method": (b"G@T / HTTP/1.1\r\n" + HOST + b"\r\n", "invalid method", "invalid method"),
    "TLS on the plain port": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", "invalid method", None),
    "request line too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
                              "request line or header too long", "request line or header too long"),
    "header too long": (b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
                        "request line or header too long", "request line or header too long"),
    "too many headers": (b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
                         "too many headers", "too many headers"),
    "control byte in a header name": (b"GET / HTTP/1.1\r\n" + HOST + b"X\x01y: 1\r\n\r\n", "invalid header",
                                      "invalid header"),
    "Content-Length not a number": (b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n",
                                    "bad Content-Length", "invalid header"),
    "two Content-Lengths": (b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                            "bad Content-Length", "bad Content-Length"),
    "Content-Length and chunked": (b"POST /v1/jobs HTTP/1.1\r\n" + HOST
                                   + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                                   "bad Transfer-Encoding", "bad Transfer-Encoding"),
    "chunked not last": (b"POST /v1/jobs HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
                         "bad Transfer-Encoding", "bad Transfer-Encoding"),
    "bad chunk size": (b"POST /v1/jobs HTTP/1.1\r\n" + HOST + MULTIPART
                       + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
                       "bad chunked encoding", "bad chunked encoding"),
    "body not the gzip it claims": (b"POST /v1/jobs HTTP/1.1\r\n" + HOST + MULTIPART + b"Content-Encoding: gzip\r\n"
                                    + b"Content-Length: %d\r\n\r\n" % len(NOT_GZIP) + NOT_GZIP,
                                    "bad Content-Encoding", "bad Content-Encoding"),
}


@pytest.fixture(scope="module", params=["runner", "serve", "serve on the pure-Python parser"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """(port, parser) of a real server: ``llhttp`` (aiohttp's C parser) or ``python``."""
    data = tmp_path_factory.mktemp("parser") / "data"
    if request.param == "runner":
        settings = load_settings(ROOT / "config.toml", environ={}).with_overrides(server={"data_dir": str(data)})
        with serving(settings) as base:
            yield int(base.rsplit(":", 1)[1]), "llhttp"
        return
    pure = request.param.endswith("parser")
    env = {"STT_QUEUE_JOB_WORKERS": "0", **({"AIOHTTP_NO_EXTENSIONS": "1"} if pure else {})}
    with running_server(data, env=env) as running:
        yield int(running.base.rsplit(":", 1)[1]), "python" if pure else "llhttp"


async def _exchange(port: int, request: bytes, *, expect_continue: bytes | None = None) -> bytes:
    """Send ``request``; with ``expect_continue``, send that body once the server asked for it.
    Returns everything the server sent until it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        if expect_continue is not None:
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30) == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(expect_continue)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)  # times out if the connection stays open
    finally:
        writer.close()


def _answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of the one answer in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert len(body) == int(headers["content-length"]), raw  # one answer and nothing after it
    return int(status_line.split()[1]), headers, json.loads(body)


def _assert_refused(raw: bytes, fault: str) -> None:
    status, headers, body = _answer(raw)
    assert status == 400, raw
    assert headers["content-type"].startswith("application/json")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    assert "sandbox" in headers["content-security-policy"]
    assert body == {"error": {"message": f"bad HTTP request: {fault}", "type": "invalid_request_error",
                              "param": None, "code": "malformed_request"}}


@pytest.mark.parametrize("name", CASES)
async def test_a_request_the_parser_refuses_gets_json_and_the_connection_closes(
        server: tuple[int, str], name: str, caplog: pytest.LogCaptureFixture) -> None:
    port, parser = server
    request, llhttp_fault, python_fault = CASES[name]
    fault = llhttp_fault if parser == "llhttp" else python_fault
    if fault is None:
        pytest.skip(f"aiohttp's {parser} parser waits for a line end here")
    _assert_refused(await _exchange(port, request), fault)
    # A client's fault is no server error (the runner's log is this process's; the others' are not seen).
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_chunked_framing_that_breaks_mid_body_is_400_at_once(server: tuple[int, str],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The handler is reading the upload when the framing breaks (it asked for the body with
    100 Continue): the answer is the 400, not the 408 of a body that stopped arriving."""
    port, _ = server
    headers = (b"POST /v1/jobs HTTP/1.1\r\n" + HOST + MULTIPART
               + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
    body = b"%x\r\n" % len(FILE_PART) + FILE_PART + b"\r\n" + b"ZZ\r\nabc\r\n0\r\n\r\n"
    loop = asyncio.get_running_loop()
    began = loop.time()
    _assert_refused(await _exchange(port, headers, expect_continue=body), "bad chunked encoding")
    assert loop.time() - began < 5  # the body's grace is 10 s
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_good_request_on_the_same_server_is_unaffected(server: tuple[int, str]) -> None:
    port, _ = server
    status, headers, body = _answer(await _exchange(port, b"GET /healthz HTTP/1.1\r\n" + HOST
                                                    + b"Connection: close\r\n\r\n"))
    assert status == 200 and headers["x-content-type-options"] == "nosniff" and body["status"] == "ok"


@pytest.mark.parametrize(("exc", "fault"), [
    (LineTooLong(b"aaaa", 8190), "request line or header too long"),
    (BadHttpMethod("GARBAGE"), "invalid method"),
    (InvalidHeader("X\x01y"), "invalid header"),
    (TransferEncodingError("ZZ"), "bad chunked encoding"),
    (BadHttpMessage("Invalid character in chunk size:\n\n  b'ZZ'\n    ^"), "bad chunked encoding"),
    (BadHttpMessage("Invalid character in Content-Length:\n\n  b'Content-Length: x'\n  ^"), "bad Content-Length"),
    # llhttp's reason comes before ":\n"; the request's own bytes after it are never read
    (BadHttpMessage("Invalid header value char:\n\n  b'X: chunked'\n  ^"), "invalid header"),
    (BadHttpMessage("Too many headers received"), "too many headers"),
    (BadHttpMessage("Something new:\n\n  b'GET / HTTP/1.1'\n  ^"), "malformed request"),
    (None, "malformed request"),
])
def test_parse_faults_name_the_kind_only(exc: BaseException | None, fault: str) -> None:
    assert parse_fault(exc) == fault


def test_a_body_error_is_named_by_its_cause() -> None:
    wrapped = web.RequestPayloadError("400, message:\n  Can not decode content-encoding: gzip")
    wrapped.__cause__ = ContentEncodingError("Can not decode content-encoding: gzip")
    assert parse_fault(wrapped) == "bad Content-Encoding"
