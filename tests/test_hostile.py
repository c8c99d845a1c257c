"""Hostile clients, in-process: a polyglot upload, cross-site writes, rebinding hosts, field floods,
event-stream floods, audio that lies about itself, and the pure policies behind each refusal."""

from __future__ import annotations

import asyncio
import io
import struct
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.http.apikeys import hash_key
from stt_server.http.descriptors import AcceptErrorLog, stream_cap
from stt_server.errors import InvalidAudio
from stt_server.http.httpsec import audio_content_type, content_disposition, page_csp
from stt_server.http.limits import STREAM_GATE
from stt_server.audio.media import probe
from stt_server.http.origin import cross_site_refusal, host_allowed, same_origin
from stt_server.settings import Settings
from tests.gated_engine import GatedEngine, factory_for, gated_settings

KEY = "hostile-test-key-000000000000000000"


def tone_wav(seconds: float = 1.0, rate: int = 16_000, extra_chunk: bytes | None = None) -> bytes:
    """A real, decodable WAV (a quiet tone); ``extra_chunk`` goes in as a RIFF chunk before the data."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 440 * t) * 3000).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    data = buffer.getvalue()
    if extra_chunk is None:
        return data
    chunk = b"html" + struct.pack("<I", len(extra_chunk)) + extra_chunk + (b"\0" if len(extra_chunk) & 1 else b"")
    at = data.index(b"data")
    body = data[12:at] + chunk + data[at:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def wav_header(rate: int, data_bytes: int, *, byte_rate: int | None = None, present: int | None = None) -> bytes:
    """A PCM WAV header written by hand (16-bit mono) over ``present`` bytes of tone."""
    block = 2
    fmt = struct.pack("<HHIIHH", 1, 1, rate, byte_rate if byte_rate is not None else rate * block, block, 16)
    pcm = tone_wav(1.0)[44:][: present if present is not None else data_bytes]
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes) + pcm)


POLYGLOT = tone_wav(extra_chunk=b"<html><script>fetch('/v1/jobs').then(r=>r.text()).then(alert)</script></html>")


@pytest.fixture
def engine() -> GatedEngine:
    return GatedEngine(go=False)  # jobs stay running: nothing depends on a transcription


@pytest.fixture
async def gated(make_client: Any, settings: Settings, engine: GatedEngine) -> TestClient:
    return await make_client(gated_settings(settings), engine_factory=factory_for(engine))


def form(data: bytes, filename: str, **fields: str) -> FormData:
    out = FormData()
    for name, value in fields.items():
        out.add_field(name, value)
    out.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return out


async def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


# ---------------------------------------------------------------- 1. the stored-XSS polyglot


@pytest.mark.parametrize("name", ["notes.html", "notes.svg", "notes.xhtml", "notes.js"])
async def test_a_polyglot_wav_is_served_as_audio_in_a_sandbox(gated: TestClient, name: str) -> None:
    created = await gated.post("/v1/jobs", data=form(POLYGLOT, name))
    job = await created.json()
    assert created.status == 202, job
    response = await gated.get(f"/v1/jobs/{job['id']}/audio")
    assert response.status == 200 and await response.read() == POLYGLOT
    assert response.headers["Content-Type"] == "audio/wav"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("sandbox")
    assert response.headers["Content-Disposition"].startswith("inline; ")
    ranged = await gated.get(f"/v1/jobs/{job['id']}/audio", headers={"Range": "bytes=0-99"})
    assert ranged.status == 206 and ranged.headers["Content-Type"] == "audio/wav"


async def test_download_names_cannot_inject_parameters(gated: TestClient, engine: GatedEngine) -> None:
    # The name arrives RFC 5987-encoded, so the server sees it raw: x.wav"; filename="evil.html
    body = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; '
            b"filename*=UTF-8''x.wav%22%3B%20filename%3D%22evil.html\r\n\r\n" + tone_wav() + b"\r\n--b0undary--\r\n")
    created = await gated.post("/v1/jobs", data=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    job = await created.json()
    assert job["filename"] == 'x.wav"; filename="evil.html', job
    audio = await gated.get(f"/v1/jobs/{job['id']}/audio")
    disposition = audio.headers["Content-Disposition"]
    assert disposition.count('"') == 2 and disposition.count(";") == 2, disposition
    assert 'filename="x.wav__ filename__evil.html"' in disposition
    assert "filename*=UTF-8''x.wav%22%3B%20filename%3D%22evil.html" in disposition
    engine.go.set()
    for _ in range(400):
        if (await (await gated.get(f"/v1/jobs/{job['id']}")).json())["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    download = await gated.get(f"/v1/jobs/{job['id']}/transcript?format=srt&download=1")
    assert download.status == 200
    assert download.headers["Content-Disposition"].startswith('attachment; filename="x.wav__ filename__evil.srt"')
    assert download.headers["Content-Security-Policy"].startswith("sandbox")


@pytest.mark.parametrize(("container", "expected"), [
    ("wav", "audio/wav"), ("mp3", "audio/mpeg"), ("ogg", "audio/ogg"), ("flac", "audio/flac"),
    ("mov,mp4,m4a,3gp,3g2,mj2", "audio/mp4"), ("matroska,webm", "audio/webm"),
    ("aac", "application/octet-stream"), (None, "application/octet-stream"), ("html", "application/octet-stream"),
])
def test_audio_type_comes_from_the_container(container: str | None, expected: str) -> None:
    assert audio_content_type(container) == expected


@pytest.mark.parametrize(("name", "fallback", "encoded"), [
    ("meeting.mp3", "meeting.mp3", "meeting.mp3"),
    ("réunion été.wav", "r_union _t_.wav", "r%C3%A9union%20%C3%A9t%C3%A9.wav"),
    ('a"b;c\r\nd.srt', "a_b_cd.srt", "a%22b%3Bcd.srt"),
    ("../../etc/passwd", "passwd", "passwd"),
    (".htaccess", "htaccess", "htaccess"),
    ("", "download", "download"),
])
def test_content_disposition_is_rfc6266(name: str, fallback: str, encoded: str) -> None:
    assert content_disposition("attachment", name) == f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


async def test_every_response_is_nosniff_and_the_page_has_a_strict_csp(gated: TestClient) -> None:
    for path in ("/healthz", "/v1/jobs/job_nope", "/openapi.json", "/no-such-route"):
        response = await gated.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "no-referrer", path
    page = await gated.get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert "script-src 'self' 'sha256-" in csp  # the import map, by its hash
    assert page.headers["X-Frame-Options"] == "DENY"


def test_page_csp_allows_inline_scripts_only_by_hash() -> None:
    csp = page_csp('<script type="importmap">{"imports":{}}</script><script src="/static/a.js"></script>')
    assert csp.count("'sha256-") == 1


# ---------------------------------------------------------------- 2. cross-site writes


@pytest.mark.parametrize(("method", "site", "origin", "refused"), [
    ("POST", None, None, False),                                   # curl, SDKs, the CLI
    ("POST", "same-origin", "http://127.0.0.1:8000", False),       # the page itself
    ("POST", None, "http://127.0.0.1:8000", False),
    ("POST", "cross-site", None, True),
    ("POST", "same-site", "http://127.0.0.1:9999", True),          # another port: another origin
    ("POST", None, "http://evil.example", True),
    ("POST", None, "null", True),                                  # sandboxed frames, file: pages
    ("DELETE", None, "https://evil.example", True),
    ("GET", "cross-site", "http://evil.example", False),           # reads: the job ids stay secret
    ("HEAD", "cross-site", None, False),
])
def test_cross_site_policy(method: str, site: str | None, origin: str | None, refused: bool) -> None:
    assert (cross_site_refusal(method, site, origin, "127.0.0.1:8000") is not None) is refused


def test_pages_under_an_allowed_host_are_the_servers_own() -> None:
    # A proxy rewrote Host to the loopback address; the page was served as https://stt.internal/.
    own = frozenset({"stt.internal"})
    assert cross_site_refusal("POST", "same-origin", "https://stt.internal", "127.0.0.1:8000", own) is None
    assert cross_site_refusal("POST", "cross-site", "https://evil.example", "127.0.0.1:8000", own) is not None


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("https://stt.example.com", "stt.example.com", True),           # TLS ended by a proxy in front
    ("https://stt.example.com", "stt.example.com:443", True),
    ("http://stt.example.com:8080", "stt.example.com", False),
    ("http://[::1]:8000", "[::1]:8000", True),
    ("http://LOCALHOST:8000", "localhost:8000", True),
    ("ftp://127.0.0.1:8000", "127.0.0.1:8000", False),
    ("http://127.0.0.1:99999", "127.0.0.1:99999", False),
])
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


async def test_cross_site_uploads_and_deletes_get_403_json(gated: TestClient) -> None:
    own = f"http://{gated.server.host}:{gated.server.port}"
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://{gated.server.host}:1"}):
        await error_of(await gated.post("/v1/jobs", data=form(tone_wav(), "a.wav"), headers=headers), 403, "cross_site")
        await error_of(await gated.post("/v1/audio/transcriptions", data=form(tone_wav(), "a.wav", model="gated-1"),
                                        headers=headers), 403, "cross_site")
    assert (await (await gated.get("/v1/jobs")).json())["data"] == []
    job = await (await gated.post("/v1/jobs", data=form(tone_wav(), "a.wav"), headers={"Origin": own})).json()
    await error_of(await gated.delete(f"/v1/jobs/{job['id']}", headers={"Origin": "http://evil.example"}), 403)
    assert (await gated.delete(f"/v1/jobs/{job['id']}", headers={"Origin": own})).status == 204


async def test_json_endpoints_refuse_form_and_text_bodies(gated: TestClient) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = await gated.post("/v1/admin/cache/invalidate", data=b'{"all": true}',
                                    headers={"Content-Type": content_type})
        await error_of(response, 415, "unsupported_media_type")
    assert (await gated.post("/v1/admin/cache/invalidate", json={"all": True})).status == 200


# ---------------------------------------------------------------- 3. DNS rebinding


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1:8000", True), ("localhost:8000", True), ("[::1]:8000", True), ("127.5.6.7", True),
    ("app.localhost:8000", True), ("LOCALHOST.", True), ("stt.internal:8000", True),
    ("evil.example:8000", False), ("10.0.0.5:8000", False), ("127.0.0.1.evil.example", False), ("", False),
])
def test_host_policy(host: str, allowed: bool) -> None:
    assert host_allowed(host, frozenset({"stt.internal"})) is allowed


async def test_a_rebound_name_gets_421_without_keys(gated: TestClient, make_client: Any, settings: Settings) -> None:
    for path in ("/v1/jobs", "/", "/readyz"):
        await error_of(await gated.get(path, headers={"Host": "rebind.evil.example"}), 421, "host_not_allowed")
    assert (await gated.get("/v1/jobs", headers={"Host": "localhost"})).status == 200
    assert (await gated.get("/v1/jobs", skip_auto_headers=["Host"])).status == 200  # no browser's request
    listed = await make_client(settings.with_overrides(server={"allowed_hosts": ["stt.internal"]}))
    assert (await listed.get("/healthz", headers={"Host": "stt.internal:8000"})).status == 200
    keyed = await make_client(settings.with_overrides(auth={"keys": [{"id": "a", "sha256": hash_key(KEY)}]}))
    response = await keyed.get("/v1/jobs", headers={"Host": "stt.example.com", "Authorization": f"Bearer {KEY}"})
    assert response.status == 200  # with keys, a rebinding page has no key to send


def test_allowed_hosts_from_the_environment() -> None:
    from stt_server.settings import load_settings

    settings = load_settings(None, environ={"STT_SERVER_ALLOWED_HOSTS": "a.example, B.example",
                                            "STT_WEBHOOK_ALLOW_HOSTS": "hooks.internal"})
    assert settings.server.allowed_hosts == ("a.example", "b.example")
    assert settings.webhook.allow_hosts == ("hooks.internal",)


# ---------------------------------------------------------------- 5. multipart fields


def raw_multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
                    for name, value in parts)
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
             + tone_wav() + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


async def _chunked(data: bytes) -> Any:
    for at in range(0, len(data), 4096):
        yield data[at:at + 4096]


@pytest.mark.parametrize(("parts", "code"), [
    ([(f"f{i}", b"x") for i in range(33)], "too_many_fields"),
    ([("language", b"en")] * 2, "repeated_field"),
    ([("prompt", b"a")] + [("prompt", b"a")] * 50_000, "repeated_field"),  # the quadratic join of old
    ([("timestamp_granularities[]", b"word")] * 9, "repeated_field"),
    ([(f"f{i}", b"x" * 16_000) for i in range(5)], "fields_too_large"),
    ([("", b"x" * 16_000)] * 5, "fields_too_large"),                      # nameless parts count too
])
@pytest.mark.parametrize("chunked", [False, True])
async def test_field_floods_get_400(gated: TestClient, parts: list[tuple[str, bytes]], code: str,
                                    chunked: bool) -> None:
    body, content_type = raw_multipart(parts)
    data: Any = _chunked(body) if chunked else body
    response = await gated.post("/v1/jobs", data=data, headers={"Content-Type": content_type})
    await error_of(response, 400, code)
    assert (await (await gated.get("/v1/jobs")).json())["data"] == []


async def test_a_list_field_within_bounds_still_works(gated: TestClient) -> None:
    body, content_type = raw_multipart([("model", b"gated-1"), ("response_format", b"verbose_json"),
                                        ("timestamp_granularities[]", b"word"),
                                        ("timestamp_granularities[]", b"segment")])
    task = asyncio.ensure_future(gated.post("/v1/audio/transcriptions", data=body,
                                            headers={"Content-Type": content_type}))
    for _ in range(200):  # accepted: a job appears (the gated engine holds it)
        if (await (await gated.get("/v1/jobs")).json())["data"]:
            break
        await asyncio.sleep(0.05)
    assert (await (await gated.get("/v1/jobs")).json())["data"]
    task.cancel()


# ---------------------------------------------------------------- 6. event streams


async def test_event_streams_are_capped_per_client_and_in_total(make_client: Any, settings: Settings,
                                                                engine: GatedEngine) -> None:
    client = await make_client(gated_settings(settings).with_overrides(
        limits={"max_event_streams_per_client": 2, "max_event_streams": 3}), engine_factory=factory_for(engine))
    job = await (await client.post("/v1/jobs", data=form(tone_wav(), "a.wav"))).json()
    streams = [await client.get(f"/v1/jobs/{job['id']}/events") for _ in range(2)]
    assert all(s.status == 200 for s in streams)
    await error_of(await client.get(f"/v1/jobs/{job['id']}/events"), 429, "too_many_streams")
    gate = client.server.app[STREAM_GATE]
    assert gate.open == 2 and gate.refused == 1
    for stream in streams:
        stream.close()
    for _ in range(200):
        if gate.open == 0:
            break
        await asyncio.sleep(0.02)
    assert gate.open == 0
    assert (await client.get(f"/v1/jobs/{job['id']}/events")).status == 200


@pytest.mark.parametrize(("configured", "nofile", "cap"), [(1000, 1024, 256), (1000, 1 << 20, 1000), (10, 4, 1)])
def test_stream_cap_keeps_descriptors_for_everything_else(configured: int, nofile: int, cap: int) -> None:
    assert stream_cap(configured, nofile) == cap


def test_accept_errors_are_logged_once_per_interval() -> None:
    import structlog

    now = [0.0]
    handler = AcceptErrorLog(interval_s=60, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        with structlog.testing.capture_logs() as logs:
            for i in range(10_000):
                now[0] = i * 0.01
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(24, "Too many open files")})
            now[0] = 120.0
            handler(loop, {"message": "socket.accept() out of system resource", "exception": OSError(24, "x")})
    finally:
        loop.close()
    failures = [e for e in logs if e["event"] == "accept_failed"]
    assert len(failures) == 3 and failures[-1]["repeats_since_last"] == 3999


# ---------------------------------------------------------------- 7. audio that lies


@pytest.mark.parametrize(("content", "message"), [
    (lambda: wav_header(1, 4000), "sample rate of 1 Hz"),
    (lambda: wav_header(2_147_483_647, 4000), "sample rate of 2147483647 Hz"),
    (lambda: wav_header(4000, 8000), "sample rate of 4000 Hz"),
])
def test_probe_refuses_audio_that_lies(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "liar.wav"
    path.write_bytes(content())
    with pytest.raises(InvalidAudio, match=message):
        probe(path)


def test_a_lying_byte_rate_does_not_stretch_pcm(tmp_path: Path) -> None:
    path = tmp_path / "liar.wav"
    path.write_bytes(wav_header(16_000, 32_000, byte_rate=2))  # the header's byte rate claims 16,000 s
    assert probe(path).duration_s == pytest.approx(1.0)  # what the bytes present hold


def test_probe_accepts_the_edges_of_the_rate_range(tmp_path: Path) -> None:
    for rate in (8_000, 48_000):
        path = tmp_path / f"{rate}.wav"
        path.write_bytes(tone_wav(1.0, rate))
        assert probe(path).sample_rate == rate


def test_decoder_messages_stay_in_the_log(tmp_path: Path) -> None:
    import structlog

    from stt_server.audio.media import UNDECODABLE, energy_envelope

    path = tmp_path / "secret-dir" / "junk.wav"
    path.parent.mkdir()
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 100)
    with structlog.testing.capture_logs() as logs, pytest.raises(InvalidAudio) as caught:
        energy_envelope(path)
    assert caught.value.message == UNDECODABLE  # no path, no decoder text, no address
    assert any(e["event"] == "ffmpeg_failed" and e["detail"] for e in logs)


async def test_a_key_past_its_audio_quota_gets_429(make_client: Any, settings: Settings, engine: GatedEngine) -> None:
    client = await make_client(gated_settings(settings).with_overrides(limits={"max_queued_audio_s": 2.5}),
                               engine_factory=factory_for(engine))
    for _ in range(2):
        assert (await client.post("/v1/jobs", data=form(tone_wav(1.0), "a.wav"))).status == 202
    await error_of(await client.post("/v1/jobs", data=form(tone_wav(1.0), "b.wav")), 429, "audio_quota")
    engine.go.set()  # the first jobs finish: room again
    for _ in range(400):
        response = await client.post("/v1/jobs", data=form(tone_wav(1.0), "c.wav"))
        if response.status == 202:
            break
        await asyncio.sleep(0.05)
    assert response.status == 202


async def test_two_uploads_side_by_side_cannot_both_slip_under_the_audio_quota(
        make_client: Any, settings: Settings, engine: GatedEngine) -> None:
    from tests.conftest import services_of

    client = await make_client(gated_settings(settings).with_overrides(limits={"max_queued_audio_s": 1.5}),
                               engine_factory=factory_for(engine))
    svc = services_of(client)
    inserting, go_on, real_insert = asyncio.Event(), asyncio.Event(), svc.store.insert_job

    async def held_insert(job: Any) -> None:  # the first upload: past its quota check, row not written
        inserting.set()
        await go_on.wait()
        await real_insert(job)

    svc.store.insert_job = held_insert  # type: ignore[method-assign]
    first = asyncio.create_task(client.post("/v1/jobs", data=form(tone_wav(1.0), "a.wav")))
    await inserting.wait()
    await error_of(await client.post("/v1/jobs", data=form(tone_wav(1.0), "b.wav")), 429, "audio_quota")
    go_on.set()
    assert (await first).status == 202
    assert svc.audio_reserved == {}  # every hold given back once its row exists, and no owner left behind
