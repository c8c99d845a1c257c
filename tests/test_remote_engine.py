"""The OpenAI-compatible engine against a real local HTTP server (HTTP/1.1, h2c and TLS + ALPN h2)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import numpy as np
import pytest
from structlog.testing import capture_logs

from stt_server.engines.backoff import RetryPolicy
from stt_server.engines.dispatch import OnEvent, Runner
from stt_server.engines.base import ChunkRequest, Engine
from stt_server.engines.openai_format import parse_verbose_json
from stt_server.engines.remote import OpenAIEngine
from stt_server.errors import EngineError
from stt_server.settings import UpstreamSettings, upstreams_from_config
from tests.conftest_upstream import MakeUpstream, dead_port  # the fixtures come through conftest.py
from tests.fake_upstream import Call, FakeUpstream

MODEL = "openai/whisper-large-v3"


def up(fake: FakeUpstream | str, name: str = "up", **kw: Any) -> UpstreamSettings:
    """Settings with test-sized timings: short timeouts and backoff."""
    base_url = fake if isinstance(fake, str) else fake.base_url
    defaults: dict[str, Any] = dict(retry_base_s=0.01, retry_max_s=0.5, timeout_s=2.0, connect_timeout_s=1.0)
    return UpstreamSettings(name=name, base_url=base_url, model=MODEL, **{**defaults, **kw})


@asynccontextmanager
async def running(*ups: UpstreamSettings, on_event: OnEvent | None = None, clock: Callable[[], float] = time.monotonic,
                  **kw: Any) -> AsyncIterator[Runner]:
    """The engine behind its dispatch runner, as the server drives it (retries, circuits, routing)."""
    engine = OpenAIEngine(list(ups), **kw)
    await engine.start()
    try:
        yield Runner(engine, RetryPolicy(), on_event, clock)
    finally:
        await engine.close()


def chunk(seconds: float = 1.0, **kw: Any) -> ChunkRequest:
    return ChunkRequest(samples=np.zeros(int(16_000 * seconds), dtype=np.float32), **kw)


def ups_stats(engine: Runner, name: str = "up") -> dict[str, Any]:
    stats: dict[str, Any] = engine.stats()["upstreams"][name]
    return stats


async def test_happy_path_parses_verbose_json_and_sends_the_form(fake_upstream: FakeUpstream) -> None:
    async with running(up(fake_upstream)) as engine:
        assert isinstance(engine.engine, Engine) and engine.engine.ready
        t = await engine.transcribe(chunk(1.0, language="en", prompt="Hello.", word_timestamps=True))
    call = fake_upstream.calls[0]
    assert call.audio_format == "opus" and call.file_bytes < 32044 / 4  # the default upload format
    assert t.text == f"chunk of {call.file_bytes} bytes" and t.language == "en" and t.duration == 1.0
    (seg,) = t.segments
    assert (seg.start, seg.end, seg.tokens, seg.avg_logprob) == (0.0, 1.0, (1, 2, 3), -0.25)
    assert [w.word for w in seg.words] == ["chunk", "of", str(call.file_bytes), "bytes"] and seg.words[-1].end == 1.0
    assert call.fields["model"] == [MODEL] and call.fields["response_format"] == ["verbose_json"]
    assert call.fields["timestamp_granularities[]"] == ["segment", "word"]
    assert call.fields["language"] == ["en"] and call.fields["prompt"] == ["Hello."]
    assert call.duration_s == 1.0 and "authorization" not in call.headers
    stats = ups_stats(engine)
    assert stats["requests_by_status"] == {"200": 1} and stats["retries_total"] == 0
    assert stats["connections_opened_total"] == 1 and stats["latency_s"]["count"] == 1
    assert stats["circuit"] == "closed" and stats["in_flight"] == 0


async def test_live_pool_figures(fake_upstream: FakeUpstream) -> None:
    async with running(up(fake_upstream)) as engine:
        await engine.transcribe(chunk(0.1))
        assert ups_stats(engine)["connections_open"] == 1
        assert engine.engine.limits.max_chunk_s == 30.0 and engine.engine.limits.concurrency == 8


async def test_text_only_answer_becomes_one_segment(fake_upstream: FakeUpstream) -> None:
    fake_upstream.responder = lambda call: {"text": " hello there "}
    async with running(up(fake_upstream)) as engine:
        t = await engine.transcribe(chunk(2.5, word_timestamps=False))
    assert [(s.start, s.end, s.text) for s in t.segments] == [(0.0, 2.5, "hello there")]
    assert fake_upstream.calls[0].fields["timestamp_granularities[]"] == ["segment"]


def test_parse_verbose_json_spreads_top_level_words_and_maps_language() -> None:
    data = {"language": "english", "text": "a b c", "segments": [
        {"start": 0.0, "end": 1.0, "text": " a b"}, {"start": 1.0, "end": 2.0, "text": " c"}],
        "words": [{"word": "a", "start": 0.1, "end": 0.4}, {"word": "b", "start": 0.5, "end": 0.9},
                  {"word": "c", "start": 1.2, "end": 1.8}]}
    t = parse_verbose_json(data, 2.0)
    assert t.language == "en" and t.text == "a b c"
    assert [[w.word for w in s.words] for s in t.segments] == [["a", "b"], ["c"]]
    assert parse_verbose_json({"text": ""}, 1.0, "ru").segments == ()
    assert parse_verbose_json({"text": "x", "language": "klingon"}, 1.0).language == "klingon"


async def test_malformed_success_body_is_retried(fake_upstream: FakeUpstream) -> None:
    answers = iter([{"segments": "not a list"}, {"text": "fine"}])
    fake_upstream.responder = lambda call: next(answers)
    async with running(up(fake_upstream)) as engine:
        assert (await engine.transcribe(chunk())).text == "fine"
        assert ups_stats(engine)["requests_by_status"] == {"invalid_response": 1, "200": 1}


async def test_500_500_200_completes_with_retries_counted(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script.extend([500, 500, 200])
    async with running(up(fake_upstream)) as engine:
        t = await engine.transcribe(chunk())
        stats = ups_stats(engine)
    assert t.text.startswith("chunk of") and fake_upstream.requests == 3
    assert stats["retries_total"] == 2 and stats["requests_by_status"] == {"500": 2, "200": 1}
    assert stats["consecutive_failures"] == 0 and stats["last_status"] == "200"


async def test_429_retry_after_is_honoured(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script.extend([(429, {"Retry-After": "0.2"}), 200])
    async with running(up(fake_upstream)) as engine:
        t0 = time.monotonic()
        await engine.transcribe(chunk())
        waited = time.monotonic() - t0
        stats = ups_stats(engine)
    assert waited >= 0.2
    assert stats["requests_by_status"] == {"429": 1, "200": 1} and stats["retries_total"] == 1
    assert stats["circuit_opened_total"] == 0


async def test_retry_after_longer_than_allowed_fails_with_the_reason(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script.extend([(429, {"Retry-After": "3600"})])
    async with running(up(fake_upstream, name="busy")) as engine:
        with pytest.raises(EngineError, match=r"upstream busy failed: last status 429.*retry after 3600"):
            await engine.transcribe(chunk())
    assert fake_upstream.requests == 1


async def test_timeout_is_retried_then_names_the_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.hang_s = 5.0
    fake_upstream.script.extend(["timeout", "timeout"])
    async with running(up(fake_upstream, name="slow", timeout_s=0.2, retries=1)) as engine:
        t0 = time.monotonic()
        with pytest.raises(EngineError, match=r"upstream slow failed: last status timeout after 2 attempt"):
            await engine.transcribe(chunk())
        assert time.monotonic() - t0 < 2.0
        assert ups_stats(engine, "slow")["requests_by_status"] == {"timeout": 2}
    assert fake_upstream.requests == 2


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
async def test_dropped_connection_is_retried(fake_upstream: FakeUpstream, http2: bool) -> None:
    fake_upstream.script.extend(["drop", 200])
    async with running(up(fake_upstream, http2=http2)) as engine:
        t = await engine.transcribe(chunk())
        stats = ups_stats(engine)
    assert t.text.startswith("chunk of") and fake_upstream.requests == 2
    assert stats["requests_by_status"] == {"connection_error": 1, "200": 1}


async def test_4xx_is_not_retried(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script.extend([400, 200])
    async with running(up(fake_upstream, name="picky")) as engine:
        with pytest.raises(EngineError, match=r"upstream picky failed: last status 400 after 1 attempt.*scripted"):
            await engine.transcribe(chunk())
        stats = ups_stats(engine, "picky")
    assert fake_upstream.requests == 1 and stats["retries_total"] == 0 and stats["consecutive_failures"] == 0


async def test_dead_upstream_opens_the_circuit_and_fails_fast() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    dead = up(f"http://127.0.0.1:{dead_port()}/v1", name="dead", circuit_threshold=2, retries=4)
    async with running(dead, on_event=lambda n, d: events.append((n, d))) as engine:
        t0 = time.monotonic()
        with pytest.raises(EngineError, match=r"upstream dead unavailable: circuit open; last status connection"):
            await engine.transcribe(chunk())
        with pytest.raises(EngineError, match="circuit open"):
            await engine.transcribe(chunk())
        assert time.monotonic() - t0 < 1.0
        stats = ups_stats(engine, "dead")
    assert [n for n, _ in events] == ["upstream.circuit_opened"] and events[0][1]["upstream"] == "dead"
    assert stats["circuit"] == "open" and stats["requests_by_status"] == {"connection_error": 2}


async def test_circuit_half_opens_after_cooldown_and_closes(fake_upstream: FakeUpstream) -> None:
    now = [0.0]
    events: list[str] = []
    fake_upstream.script.extend([500, 500])
    settings = up(fake_upstream, circuit_threshold=2, circuit_cooldown_s=10.0, retries=1)
    async with running(settings, on_event=lambda n, d: events.append(n), clock=lambda: now[0]) as engine:
        with pytest.raises(EngineError, match="last status 500"):
            await engine.transcribe(chunk())
        with pytest.raises(EngineError, match="circuit open"):
            await engine.transcribe(chunk())
        now[0] += 10.0
        assert ups_stats(engine)["circuit"] == "half_open"
        await engine.transcribe(chunk())
        assert ups_stats(engine)["circuit"] == "closed"
    assert events == ["upstream.circuit_opened", "upstream.circuit_closed"]
    assert fake_upstream.requests == 3


async def test_two_upstreams_share_the_load(fake_upstream_factory: MakeUpstream) -> None:
    a, b = fake_upstream_factory(latency_s=0.05), fake_upstream_factory(latency_s=0.05)
    async with running(up(a, "a", concurrency=4), up(b, "b", concurrency=4)) as engine:
        assert engine.engine.limits.concurrency == 8
        await asyncio.gather(*(engine.transcribe(chunk(0.2)) for _ in range(20)))
        await engine.transcribe(chunk(0.2))
        await engine.transcribe(chunk(0.2))  # sequential calls alternate too
    assert a.requests + b.requests == 22 and a.requests >= 8 and b.requests >= 8


async def test_a_failing_upstream_shifts_its_work_to_the_other(fake_upstream_factory: MakeUpstream) -> None:
    bad, good = fake_upstream_factory(default=503), fake_upstream_factory(latency_s=0.01)
    events: list[tuple[str, dict[str, Any]]] = []
    settings = [up(bad, "bad", circuit_threshold=3), up(good, "good")]
    async with running(*settings, on_event=lambda n, d: events.append((n, d))) as engine:
        results = await asyncio.gather(*(engine.transcribe(chunk(0.2)) for _ in range(20)))
        stats = engine.stats()["upstreams"]
    assert len(results) == 20 and all(r.text.startswith("chunk of") for r in results)
    assert good.requests == 20 and stats["bad"]["circuit"] == "open"
    assert ("upstream.circuit_opened", "bad") in [(n, d["upstream"]) for n, d in events]


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-alpn"])
async def test_http2_multiplexes_50_requests_over_at_most_2_connections(
    fake_upstream_factory: MakeUpstream, tls_ca_path: str, tls: bool,
) -> None:
    fake = fake_upstream_factory(tls=tls, latency_s=0.05)
    settings = up(fake, http2=True, concurrency=8, verify_tls=tls_ca_path if tls else True)
    async with running(settings) as engine:
        await asyncio.gather(*(engine.transcribe(chunk(0.5)) for _ in range(50)))
        opened = ups_stats(engine)["connections_opened_total"]
    assert fake.requests == 50 and {c.http_version for c in fake.calls} == {"2"}
    assert fake.connections <= 2 and opened <= 2


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_http11_pool_stays_within_its_concurrency(
    fake_upstream_factory: MakeUpstream, tls_ca_path: str, tls: bool,
) -> None:
    fake = fake_upstream_factory(tls=tls, latency_s=0.02)
    settings = up(fake, http2=False, concurrency=4, verify_tls=tls_ca_path if tls else True)
    async with running(settings) as engine:
        await asyncio.gather(*(engine.transcribe(chunk(0.5)) for _ in range(50)))
        opened = ups_stats(engine)["connections_opened_total"]
    assert fake.requests == 50 and {c.http_version for c in fake.calls} == {"1.1"}
    assert 1 < fake.connections <= 4 and opened == fake.connections


async def test_api_key_is_sent_as_bearer_and_never_leaks(fake_upstream: FakeUpstream) -> None:
    secret = "sk-test-5ecret-VALUE"
    fake_upstream.script.extend([200, 401])  # the fake echoes the Authorization header in its error
    keyed = up(fake_upstream, name="keyed", api_key_env="FAKE_KEY")
    async with running(keyed, environ={"FAKE_KEY": secret}) as engine:
        with capture_logs() as logs:
            await engine.transcribe(chunk())
            with pytest.raises(EngineError) as err:
                await engine.transcribe(chunk())
        stats = json.dumps(engine.stats())
    assert fake_upstream.calls[0].headers["authorization"] == f"Bearer {secret}"
    assert "auth: Bearer ***" in str(err.value) and secret not in str(err.value)
    assert secret not in stats and secret not in repr(err.value.body())
    assert '"authenticated": true' in stats
    assert logs and secret not in repr(logs)


def test_missing_api_key_variable_is_named_not_guessed() -> None:
    with pytest.raises(ValueError, match="environment variable CLOUD_RU_KEY is not set"):
        OpenAIEngine([UpstreamSettings("cloud", "https://example.invalid/v1", MODEL, "CLOUD_RU_KEY")], environ={})


async def test_cancellation_propagates_and_frees_the_slot(fake_upstream: FakeUpstream) -> None:
    fake_upstream.latency_s = 5.0
    async with running(up(fake_upstream, timeout_s=10.0)) as engine:
        task = asyncio.create_task(engine.transcribe(chunk()))
        while fake_upstream.requests == 0:
            await asyncio.sleep(0.01)
        assert ups_stats(engine)["in_flight"] == 1
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 0.5
        stats = ups_stats(engine)
    assert stats["in_flight"] == 0 and stats["circuit"] == "closed" and stats["requests_by_status"] == {}


async def test_limits_come_from_the_upstreams_and_config_tables_build_settings() -> None:
    a, b = upstreams_from_config([
        {"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": MODEL, "max_chunk_s": 25.0, "concurrency": 3},
        {"name": "b", "base_url": "http://127.0.0.1:2/v1", "model": "whisper-1", "max_upload_bytes": 1_000_000},
    ])
    engine = OpenAIEngine([a, b], name="cloud")
    assert (engine.name, engine.model, engine.ready) == ("cloud", MODEL, False)
    limits = engine.limits
    assert (limits.max_chunk_s, limits.max_upload_bytes, limits.concurrency) == (25.0, 1_000_000, 11)
    with pytest.raises(EngineError, match="not started"):
        await engine.transcribe(chunk())
    with pytest.raises(ValueError, match=r"unknown setting\(s\) in \[\[upstreams\]\] #1: .api_key."):
        upstreams_from_config([{"name": "x", "base_url": "http://h/v1", "model": "m", "api_key": "sk-nope"}])
    with pytest.raises(ValueError, match="base_url"):
        UpstreamSettings("x", "ftp://h", "m")


async def test_the_fake_speaks_the_real_openai_client(fake_upstream: FakeUpstream) -> None:
    """The official SDK against the fake: it is a faithful stand-in for a real upstream."""
    openai = pytest.importorskip("openai")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\0\0" * 8000)
    client = openai.AsyncOpenAI(base_url=fake_upstream.base_url, api_key="sk-local", max_retries=0)
    try:
        result = await client.audio.transcriptions.create(
            model=MODEL, file=("a.wav", buf.getvalue(), "audio/wav"), response_format="verbose_json",
            timestamp_granularities=["segment"])
    finally:
        await client.close()
    assert result.text == "chunk of 16044 bytes" and result.segments[0].end == 0.5
    call: Call = fake_upstream.calls[0]
    assert call.headers["authorization"] == "Bearer sk-local" and call.fields["response_format"] == ["verbose_json"]
