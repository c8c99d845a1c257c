"""A real OpenAI-compatible HTTP server for tests and benchmarks: an ASGI app served by hypercorn.

It listens on 127.0.0.1 on a free port, speaks HTTP/1.1 and h2c (prior knowledge) on plain
http, and HTTP/2 by ALPN when given a trustme certificate. It answers
``POST /v1/audio/transcriptions`` with a deterministic verbose_json transcript,
``POST /v1/audio/translations`` with a deterministic English one, and ``GET /v1/models``, and has fault injection knobs:

- ``latency_s``: sleep before every transcription answer;
- ``latency_per_audio_s``: sleep this much more per second of audio received (a latency model);
- ``script``: a queue of scripted answers, used one per request before ``default``:
  an ``int`` status, a ``(status, headers)`` tuple, ``"timeout"`` (sleep ``hang_s``, longer
  than any client timeout) or ``"drop"`` (start a response, then close it half sent);
- ``responder``: a callable ``Call -> dict`` to build the JSON of a 200 answer;
- ``refuse_formats``: upload formats (``"opus"``, ``"mp3"``, ``"flac"``, ``"wav"``) it answers with
  ``refuse_status`` and OpenAI's "Invalid file format" message;
- ``bandwidth_bps``: bits per second every request body shares on its way in (a network link).

It decodes every upload (PyAV) like a real engine: audio it cannot decode is a 400, so a broken
encoding fails the test; ``Call.audio_format`` and ``Call.duration_s`` come from what it decoded.

Counters: ``requests``, ``calls`` (what each request carried), ``in_flight`` and
``max_in_flight`` (requests answered at once), and ``connections`` (distinct client
``(host, port)`` pairs = distinct TCP connections). Run it in a background thread
(:meth:`FakeUpstream.start`) or as a script in its own process (``python fake_upstream.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import io
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import av
from hypercorn.asyncio import serve
from hypercorn.config import Config

Scripted = int | str | tuple[int, dict[str, str]]


@dataclass
class Call:
    """One transcription request as the server saw it."""

    fields: dict[str, list[str]]
    file_bytes: int
    duration_s: float
    headers: dict[str, str]
    client: tuple[str, int] | None
    http_version: str
    sha256: str = ""  # of the uploaded file: ties an answer to the audio it was for
    audio_format: str | None = None  # "opus", "mp3", "flac", "wav" as decoded (None: not audio)
    path: str = "/v1/audio/transcriptions"

    @property
    def task(self) -> str:
        return "translate" if self.path.endswith("/translations") else "transcribe"


@dataclass
class FakeUpstream:
    """The fake server's knobs, counters and lifecycle."""

    tls_cert_path: str | None = None
    latency_s: float = 0.0
    latency_per_audio_s: float = 0.0
    hang_s: float = 30.0
    model: str = "openai/whisper-large-v3"
    script: collections.deque[Scripted] = field(default_factory=collections.deque)
    default: Scripted = 200
    responder: Callable[[Call], dict[str, Any]] | None = None
    refuse_formats: set[str] = field(default_factory=set)
    refuse_status: int = 400
    bandwidth_bps: float | None = None
    calls: list[Call] = field(default_factory=list)
    body_bytes: int = 0  # request bodies received, in all
    requests: int = 0
    in_flight: int = 0  # requests being answered now, and the most there ever were at once
    max_in_flight: int = 0
    clients: set[tuple[str, int]] = field(default_factory=set)
    port: int = 0

    def __post_init__(self) -> None:
        self.script = collections.deque(self.script)  # accept a plain list of scripted answers
        self._link_free_at = 0.0  # when the shared link has carried every byte received so far

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert_path else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    @property
    def connections(self) -> int:
        """TCP connections that carried at least one request."""
        return len(self.clients)

    def reset(self) -> None:
        """Forget counters and the script (the server keeps running)."""
        self.script.clear()
        self.calls.clear()
        self.clients.clear()
        self.requests = self.max_in_flight = self.body_bytes = 0

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> "FakeUpstream":
        """Serve from a background thread with its own event loop; returns once bound."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = self._config(sock.detach())  # hypercorn owns the socket from here
        ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._loop.set_exception_handler(_quiet_cancellation)
            self._stop = asyncio.Event()
            ready.set()
            await serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def _config(self, fd: int) -> Config:
        config = Config()
        config.bind = [f"fd://{fd}"]
        config.graceful_timeout = 0.2
        config.keep_alive_timeout = 30
        config.accesslog = None
        config.errorlog = None
        if self.tls_cert_path:
            config.certfile = config.keyfile = self.tls_cert_path
        return config

    # --- the ASGI app ------------------------------------------------------------------
    async def app(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        """The ASGI entry point (HTTP only; lifespan is acknowledged)."""
        if scope["type"] == "lifespan":
            while (msg := await receive())["type"] != "lifespan.shutdown":
                await send({"type": msg["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await _read_body(receive, self._through_link)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/v1/models":
            data = {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
            return await _send_json(send, 200, data)
        if method != "POST" or path not in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            return await _send_json(send, 404, _error("not found"))
        await self._transcribe(scope, body, send)

    async def _transcribe(self, scope: dict[str, Any], body: bytes, send: Callable[..., Any]) -> None:
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope["headers"]}
        fields, files = parse_multipart(headers.get("content-type", ""), body)
        audio = files.get("file", b"")
        peer = scope.get("client")
        client = (str(peer[0]), int(peer[1])) if peer else None
        audio_format, duration = decode_audio(audio)
        call = Call(fields, len(audio), duration, headers, client, scope["http_version"],
                    hashlib.sha256(audio).hexdigest(), audio_format, scope["path"])
        self.requests += 1
        self.calls.append(call)
        if client is not None:
            self.clients.add(client)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if call.audio_format is None:
                return await _send_json(send, 400, _error("Could not decode the audio file"))
            if call.audio_format in self.refuse_formats:
                supported = sorted({"opus", "mp3", "flac", "wav"} - self.refuse_formats)
                return await _send_json(send, self.refuse_status,
                                        _error(f"Invalid file format. Supported formats: {supported}"))
            await self._answer(call, send)
        finally:
            self.in_flight -= 1

    async def _through_link(self, size: int) -> None:
        """Hold a piece of a body until the shared link has carried it (bodies queue on one link)."""
        self.body_bytes += size
        if not self.bandwidth_bps:
            return
        now = time.monotonic()
        self._link_free_at = max(self._link_free_at, now) + size * 8 / self.bandwidth_bps
        await asyncio.sleep(self._link_free_at - now)

    async def _answer(self, call: Call, send: Callable[..., Any]) -> None:
        if self.latency_s or self.latency_per_audio_s:
            await asyncio.sleep(self.latency_s + self.latency_per_audio_s * call.duration_s)
        action = self.script.popleft() if self.script else self.default
        if action == "timeout":
            await asyncio.sleep(self.hang_s)
            action = 504
        if action == "drop":
            # Promise a body, send part of it and end the stream: the client sees a broken response.
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
            # HTTP/1.1: leaving the body open closes the connection; HTTP/2: ending the stream
            # short of its content-length is a protocol error on the client's side.
            await send({"type": "http.response.body", "body": b'{"text": "', "more_body": call.http_version == "1.1"})
            return
        status, extra = action if isinstance(action, tuple) else (int(action), {})
        if status != 200:
            return await _send_json(send, status, _error(f"scripted {status}", call.headers), extra)
        data = self.responder(call) if self.responder else default_transcript(call)
        await _send_json(send, 200, data)


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Python 3.11 logs every connection task that shutdown cancels; those are expected here.
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


def default_transcript(call: Call) -> dict[str, Any]:
    """verbose_json: text ``chunk of N bytes`` (``translated chunk of N bytes`` from the translations
    route) in one segment spanning the WAV (words if asked)."""
    text = ("translated " if call.task == "translate" else "") + f"chunk of {call.file_bytes} bytes"
    dur = round(call.duration_s, 3)
    out: dict[str, Any] = {
        "task": call.task, "language": "english", "duration": dur, "text": text,
        "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": dur, "text": " " + text, "tokens": [1, 2, 3],
                      "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.1, "no_speech_prob": 0.01}],
    }
    if "word" in call.fields.get("timestamp_granularities[]", []):
        words = text.split()
        step = dur / len(words) if words else 0.0
        out["words"] = [{"word": w, "start": round(i * step, 3), "end": round((i + 1) * step, 3)}
                        for i, w in enumerate(words)]
    return out


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """A small multipart/form-data parser: text fields (repeatable) and file parts."""
    fields: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    if "boundary=" not in content_type:
        return fields, files
    boundary = b"--" + content_type.split("boundary=", 1)[1].split(";")[0].strip('"').encode()
    for part in body.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        data = data[:-2] if data.endswith(b"\r\n") else data
        disposition = head.decode("latin1")
        name = disposition.split('name="', 1)[1].split('"', 1)[0] if 'name="' in disposition else ""
        if 'filename="' in disposition:
            files[name] = data
        else:
            fields.setdefault(name, []).append(data.decode())
    return fields, files


_FORMATS = {"ogg": "opus", "mp3": "mp3", "flac": "flac", "wav": "wav"}


def decode_audio(data: bytes) -> tuple[str | None, float]:
    """Decode an upload to its last sample: its format and seconds (``(None, 0.0)`` if it is not audio)."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            stream = container.streams.audio[0]
            samples: int = sum(int(frame.samples) for frame in container.decode(stream))
            return _FORMATS.get(container.format.name.split(",")[0]), samples / float(stream.rate)
    except (av.FFmpegError, IndexError, ValueError):
        return None, 0.0


def _error(message: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    # Echo the caller's Authorization back, as a careless upstream might: the engine must redact it.
    echo = f" (auth: {headers['authorization']})" if headers and "authorization" in headers else ""
    return {"error": {"message": message + echo, "type": "fake_error", "param": None, "code": None}}


async def _read_body(receive: Callable[..., Any], link: Callable[[int], Any]) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        await link(len(chunks[-1]))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


async def _send_json(send: Callable[..., Any], status: int, data: Any, extra: dict[str, str] | None = None) -> None:
    raw = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


def main(argv: list[str] | None = None) -> None:
    """Run in the foreground; print ``PORT`` on one line, serve until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cert", help="PEM with key and certificate chain (enables TLS)")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--latency-per-audio-s", type=float, default=0.0)
    parser.add_argument("--bandwidth-mbps", type=float, default=0.0, help="shared link for request bodies")
    args = parser.parse_args(argv)
    fake = FakeUpstream(tls_cert_path=args.cert, latency_s=args.latency, latency_per_audio_s=args.latency_per_audio_s,
                        bandwidth_bps=args.bandwidth_mbps * 1e6 or None).start()
    print(fake.port, flush=True)
    sys.stdin.read()
    fake.stop()


if __name__ == "__main__":
    main()
