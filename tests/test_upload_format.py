"""Upload formats: the policy table, the encoder (checked by decoding), the planner's byte limit, the
cache key, and an upstream that refuses a format (fallback to FLAC, then WAV, once per upstream)."""

from __future__ import annotations

import asyncio
import io
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Awaitable, Callable

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from stt_server.engines.backoff import RetryPolicy
from stt_server.cache.keys import job_chunk_key, job_file_key
from stt_server.engines.dispatch import Runner
from stt_server.engines.base import ChunkRequest, Upload
from stt_server.engines.remote import OpenAIEngine
from stt_server.errors import EngineError
from stt_server.jobs.job import Job, Status
from stt_server.audio.media import encode_upload
from stt_server.audio.pipeline import chunk_policy
from stt_server.settings import PipelineSettings, Settings, UpstreamSettings
from stt_server.audio.upload_format import HEADER_BYTES, UploadFormat, fallback, upload_format, wire_spec
from tests.conftest import services_of, upload, wait_job
from tests.conftest_upstream import MakeUpstream
from tests.corpus import build_long_audio
from tests.fake_upstream import FakeUpstream, decode_audio

MODEL = "openai/whisper-large-v3"


def up(base_url: str, name: str = "up", **kw: Any) -> UpstreamSettings:
    defaults: dict[str, Any] = dict(retry_base_s=0.01, retry_max_s=0.05, timeout_s=5.0, connect_timeout_s=1.0)
    return UpstreamSettings(name=name, base_url=base_url, model=MODEL, **{**defaults, **kw})


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Full-band noise: the hardest audio to compress, so sizes are at their worst."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(int(16_000 * seconds)) * 0.3, -1, 1).astype(np.float32)


# ---- the policy table


@pytest.mark.parametrize(("name", "kbps", "spec", "nxt", "worst"), [
    ("opus", 32, "opus@32k", "flac", 4_400),
    ("opus", 16, "opus@16k", "flac", 2_200),
    ("mp3", 32, "mp3@32k", "flac", 4_200),
    ("flac", 32, "flac", "wav", 32_960),
    ("wav", None, "wav", None, 32_000),
])
def test_formats_name_their_spec_fallback_and_worst_size(name: str, kbps: float | None, spec: str, nxt: str | None,
                                                         worst: float) -> None:
    fmt = upload_format(name, kbps)
    assert fmt.spec == spec and fmt.worst_bytes_per_s == pytest.approx(worst)
    assert (fallback(fmt) or UploadFormat("wav")).name == (nxt or "wav") and (fallback(fmt) is None) == (nxt is None)


@pytest.mark.parametrize(("name", "kbps"), [("aac", 32), ("opus", 2), ("mp3", 320), ("opus", None)])
def test_bad_formats_are_refused_at_settings(name: str, kbps: float | None) -> None:
    with pytest.raises(ValueError, match="upstream up: upload_"):
        up("http://127.0.0.1:1/v1", upload_format=name, upload_bitrate=kbps)


def test_the_default_is_opus_at_32_kbps() -> None:
    assert up("http://127.0.0.1:1/v1").wire_format == UploadFormat("opus", 32_000)


# ---- the encoder, checked by decoding what it wrote


@pytest.mark.parametrize(("name", "kbps"), [("opus", 32), ("opus", 16), ("mp3", 32), ("flac", None), ("wav", None)])
def test_each_format_decodes_back_to_the_chunk_within_its_worst_case_size(name: str, kbps: float | None) -> None:
    fmt = upload_format(name, kbps)
    data = encode_upload(noise(7.3), fmt)
    decoded_as, seconds = decode_audio(data)
    assert decoded_as == name
    assert seconds == pytest.approx(7.3, abs=0.06)  # an MP3 pads up to its last frame (36 ms at 16 kHz)
    assert len(data) <= 7.3 * fmt.worst_bytes_per_s + HEADER_BYTES
    assert encode_upload(noise(7.3), fmt) == data  # the same samples, the same bytes


def test_opus_is_sent_in_60_ms_packets_of_celt_at_16_khz() -> None:
    """The default settings reach the encoder: complexity 0 (no speech analysis, so CELT rather than
    SILK) in 60 ms packets, at the chunk's own 16 kHz (no resampling up to 48 kHz first)."""
    data = encode_upload(noise(3.0), UploadFormat("opus", 32_000))
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size]
        head = bytes(stream.codec_context.extradata or b"")
    assert {p.duration * stream.time_base for p in packets[:-1]} == {Fraction(60, 1000)}
    assert all(bytes(p)[0] >> 3 >= 16 for p in packets)  # TOC configurations 16-31 are CELT
    assert head.startswith(b"OpusHead") and int.from_bytes(head[12:16], "little") == 16_000  # the input rate


# ---- the planner and the cache key


@pytest.mark.parametrize(("name", "kbps", "max_s"), [
    ("wav", None, (1_000_000 - HEADER_BYTES) / 32_000),
    ("flac", None, (1_000_000 - HEADER_BYTES) / 32_960),
    ("opus", 32, (1_000_000 - HEADER_BYTES) / 4_400),
    ("mp3", 64, (1_000_000 - HEADER_BYTES) / 8_400),
])
def test_the_planners_byte_limit_uses_the_formats_worst_case_size(name: str, kbps: float | None,
                                                                  max_s: float) -> None:
    engine = OpenAIEngine([up("http://127.0.0.1:1/v1", upload_format=name, upload_bitrate=kbps,
                              max_upload_bytes=1_000_000, max_chunk_s=10_000)])
    policy = chunk_policy(PipelineSettings(max_chunk_s=10_000), engine)
    assert policy.max_chunk_s == pytest.approx(max_s)


def test_the_bulkiest_upstream_format_sets_an_engines_byte_limit() -> None:
    engine = OpenAIEngine([up("http://127.0.0.1:1/v1", "a", max_upload_bytes=1_000_000, max_chunk_s=10_000),
                           up("http://127.0.0.1:2/v1", "b", upload_format="flac", max_chunk_s=10_000)])
    assert chunk_policy(PipelineSettings(max_chunk_s=10_000), engine).max_chunk_s == pytest.approx(
        (1_000_000 - HEADER_BYTES) / 32_960)


def test_the_upload_format_is_part_of_the_cache_keys() -> None:
    job = Job(id="j", status=Status.QUEUED, priority="normal", filename="a.wav", size_bytes=1, sha256="a" * 64,
              duration_s=1.0, engine="openai", model=MODEL, created_at=0.0)
    engines = {spec: OpenAIEngine([up("http://127.0.0.1:1/v1", upload_format=n, upload_bitrate=b)])
               for spec, n, b in [("opus32", "opus", 32), ("opus24", "opus", 24), ("flac", "flac", None)]}
    chunk_keys = {job_chunk_key(job, e, "b" * 64).value for e in engines.values()}
    file_keys = {job_file_key(job, e).value for e in engines.values()}
    assert len(chunk_keys) == len(file_keys) == 3
    again = OpenAIEngine([up("http://127.0.0.1:9/v1", "other", upload_format="opus", upload_bitrate=32)])
    assert job_chunk_key(job, again, "b" * 64) == job_chunk_key(job, engines["opus32"], "b" * 64)
    assert wire_spec((None,)) is None  # the embedded engine's keys carry no format
    # the encoder's settings are in the key: a transcript of one encoding is not served for another
    opus = UploadFormat("opus", 32_000)
    assert wire_spec((opus,)) == opus.key != opus.spec and opus.key.startswith("opus@32k~")
    assert wire_spec((UploadFormat("flac"),)) == "flac"


# ---- against the fake upstream, through the dispatch runner


async def _runner(*ups: UpstreamSettings, events: list[tuple[str, dict[str, Any]]] | None = None) -> Runner:
    engine = OpenAIEngine(list(ups))
    await engine.start()
    on_event = (lambda n, d: events.append((n, d))) if events is not None else None
    return Runner(engine, RetryPolicy(), on_event, time.monotonic)


def _request(runner: Runner, seconds: float = 2.0, seed: int = 0) -> ChunkRequest:
    """A chunk as the pipeline hands it over: encoded once, in its targets' formats."""
    samples = noise(seconds, seed)
    uploads = tuple(Upload(f, encode_upload(samples, f)) for f in runner.upload_formats())
    return ChunkRequest(samples=samples, uploads=uploads)


@pytest.mark.parametrize(("name", "kbps"), [("opus", 24), ("mp3", 32), ("flac", None), ("wav", None)])
async def test_a_chunk_goes_up_in_the_upstreams_format(fake_upstream: FakeUpstream, name: str,
                                                       kbps: float | None) -> None:
    runner = await _runner(up(fake_upstream.base_url, upload_format=name, upload_bitrate=kbps))
    try:
        result = await runner.transcribe(_request(runner))
    finally:
        await runner.engine.close()  # type: ignore[attr-defined]
    (call,) = fake_upstream.calls
    assert call.audio_format == name and call.duration_s == pytest.approx(2.0, abs=0.06)
    assert result.text == f"chunk of {call.file_bytes} bytes"
    stats = runner.stats()["upstreams"]["up"]
    assert stats["upload_format"] == upload_format(name, kbps).spec and stats["format_fallbacks_total"] == 0


@pytest.mark.parametrize(("refused", "status", "sent"), [
    ({"opus"}, 400, ["opus", "flac"]),
    ({"opus"}, 415, ["opus", "flac"]),
    ({"opus", "flac"}, 400, ["opus", "flac", "wav"]),
])
async def test_a_refused_format_falls_back_for_good_without_costing_an_attempt(
    fake_upstream_factory: MakeUpstream, refused: set[str], status: int, sent: list[str],
) -> None:
    fake = fake_upstream_factory(refuse_formats=refused, refuse_status=status)
    events: list[tuple[str, dict[str, Any]]] = []
    # No retries at all: a refusal must not use up the chunk's only attempt.
    runner = await _runner(up(fake.base_url, retries=0), events=events)
    try:
        first = await runner.transcribe(_request(runner))
        second = await runner.transcribe(_request(runner, seed=1))
    finally:
        await runner.engine.close()  # type: ignore[attr-defined]
    assert [c.audio_format for c in fake.calls] == [*sent, sent[-1]]  # the second chunk goes straight to it
    assert first.text and second.text
    assert [n for n, _ in events] == ["upstream.format_fallback"] * (len(sent) - 1)
    assert events[-1][1]["upstream"] == "up" and events[-1][1]["now"] == sent[-1]
    stats = runner.stats()["upstreams"]["up"]
    assert stats["upload_format"] == sent[-1] and stats["format_fallbacks_total"] == len(sent) - 1
    assert stats["circuit"] == "closed" and stats["consecutive_failures"] == 0 and stats["retries_total"] == 0


async def test_chunks_refused_together_move_the_upstream_on_once(fake_upstream_factory: MakeUpstream) -> None:
    fake = fake_upstream_factory(refuse_formats={"opus"}, latency_s=0.05)
    events: list[tuple[str, dict[str, Any]]] = []
    runner = await _runner(up(fake.base_url, retries=0, concurrency=4), events=events)
    try:
        results = await asyncio.gather(*(runner.transcribe(_request(runner, seed=n)) for n in range(4)))
    finally:
        await runner.engine.close()  # type: ignore[attr-defined]
    assert all(r.text for r in results)
    # All four were sent as Opus before the first refusal came back; each is re-sent once, as FLAC.
    formats = [c.audio_format for c in fake.calls]
    assert formats.count("flac") == 4 and formats.count("wav") == 0
    assert [n for n, _ in events] == ["upstream.format_fallback"]


async def test_a_refusal_of_every_format_fails_the_chunk_with_the_upstreams_words(
    fake_upstream_factory: MakeUpstream,
) -> None:
    fake = fake_upstream_factory(refuse_formats={"opus", "flac", "wav"})
    runner = await _runner(up(fake.base_url))
    try:
        with pytest.raises(EngineError, match=r"last status 400 after 1 attempt\(s\): Invalid file format"):
            await runner.transcribe(_request(runner))
    finally:
        await runner.engine.close()  # type: ignore[attr-defined]
    assert [c.audio_format for c in fake.calls] == ["opus", "flac", "wav"]


async def test_a_400_about_something_else_is_no_format_refusal(fake_upstream_factory: MakeUpstream) -> None:
    fake = fake_upstream_factory(script=[400])  # "scripted 400": names no file or format
    runner = await _runner(up(fake.base_url))
    try:
        with pytest.raises(EngineError, match="last status 400 after 1 attempt"):
            await runner.transcribe(_request(runner))
    finally:
        await runner.engine.close()  # type: ignore[attr-defined]
    assert [c.audio_format for c in fake.calls] == ["opus"]
    assert runner.stats()["upstreams"]["up"]["format_fallbacks_total"] == 0


# ---- a whole job through the server


async def test_a_job_on_an_upstream_that_refuses_opus_completes_in_flac_and_says_so(
    make_client: Callable[..., Awaitable[TestClient]], settings: Settings, fake_upstream_factory: MakeUpstream,
    tmp_path: Path,
) -> None:
    fake = fake_upstream_factory(refuse_formats={"opus"})
    audio = tmp_path / "speech.wav"
    build_long_audio(audio, 20.0, gap_s=0.5)
    client = await make_client(settings.with_overrides(upstreams=[dict(
        engine="openai", name="picky", base_url=fake.base_url, model=MODEL, max_chunk_s=4.0, concurrency=2,
        retries=0, timeout_s=5.0)], pipeline={"min_chunk_s": 2.0, "silence_search_s": 1.0}))
    job = await wait_job(client, (await upload(client, audio, engine="openai"))["id"], timeout=60)
    assert job["status"] == "completed", job
    spoken = [c for c in await services_of(client).store.get_chunks(job["id"]) if not c.silent]
    formats = [c.audio_format for c in fake.calls]
    # The chunks sent before the first refusal came back are re-sent once; every later one goes as FLAC.
    assert formats.count("flac") == len(spoken) >= 4 and formats.count("opus") <= 2 * 2
    assert services_of(client).bus.counts["upstream.format_fallback"] == 1
    stats = (await (await client.get("/v1/admin/stats")).json())["engines"]["openai"]["upstreams"]["picky"]
    assert stats["upload_format"] == "flac" and stats["format_fallbacks_total"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'upload_format="flac"' in metrics
