"""Rate limits: the token bucket as a pure function (tables of times), the per-client limiter with an
injected clock, and the upload gate over HTTP (429 per client, 503 when the server is busy)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.http.apikeys import hash_key
from stt_server.http.limits import UPLOAD_GATE
from stt_server.http.ratelimit import Bucket, RateLimiter, take
from stt_server.settings import Settings
from tests.gated_engine import GatedEngine, factory_for, gated_settings

RATE = 1.0  # token per second
BURST = 3.0


def _run(times: list[float]) -> list[float]:
    bucket: Bucket | None = None
    waits = []
    for now in times:
        bucket, wait = take(bucket, now, rate_per_s=RATE, burst=BURST)
        waits.append(round(wait, 6))
    return waits


@pytest.mark.parametrize("times, waits", [
    ([0, 0, 0], [0, 0, 0]),                        # a full bucket allows a burst
    ([0, 0, 0, 0], [0, 0, 0, 1.0]),                # then the next token is 1 s away
    ([0, 0, 0, 0, 0.5], [0, 0, 0, 1.0, 0.5]),      # a refused take spends nothing; time refills
    ([0, 0, 0, 1, 1], [0, 0, 0, 0, 1.0]),          # one second refills exactly one token
    ([0, 0, 0, 100, 100, 100, 100], [0, 0, 0, 0, 0, 0, 1.0]),  # idle time refills only up to the burst
    ([10, 10, 10, 5, 5], [0, 0, 0, 1.0, 1.0]),     # a clock going backwards refills nothing
])
def test_token_bucket(times: list[float], waits: list[float]) -> None:
    assert _run(times) == waits


def test_cost_above_the_burst_waits_for_the_missing_tokens() -> None:
    bucket, wait = take(None, 0.0, rate_per_s=2.0, burst=1.0, cost=3.0)
    assert (bucket, wait) == (Bucket(1.0, 0.0), 1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_limiter_is_per_client_and_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, max_clients=3)
    assert [limiter.check("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limiter.check("b") == 0.0  # another client has its own bucket
    clock.now = 1.0
    assert limiter.check("a") == 0.0
    for name in "cdef":
        limiter.check(name)
    assert len(limiter) == 3  # the least recently seen are forgotten
    assert RateLimiter(per_minute=0, burst=1).check("x") == 0.0  # 0 turns it off


# -- over HTTP -------------------------------------------------------------------------

KEYS = {"alice": "alice-key-for-rate-limits-0000000000", "bob": "bob-key-for-rate-limits-11111111111"}


async def _client(make_client: Any, settings: Settings, engine: GatedEngine, **limits: Any) -> TestClient:
    keys = [{"id": name, "sha256": hash_key(key)} for name, key in KEYS.items()]
    limited = gated_settings(settings).with_overrides(auth={"keys": keys}, limits=limits)
    return await make_client(limited, engine_factory=factory_for(engine))


def _form(corpus: Path, name: str = "pocketsphinx_cards_001.wav") -> FormData:
    form = FormData()
    form.add_field("file", (corpus / name).read_bytes(), filename=name)
    return form


async def _post(client: TestClient, corpus: Path, who: str, path: str = "/v1/jobs") -> Any:
    fields = {"model": "gated-1"} if path.startswith("/v1/audio") else {}
    form = _form(corpus)
    for k, v in fields.items():
        form.add_field(k, v)
    return await client.post(path, data=form, headers={"Authorization": f"Bearer {KEYS[who]}"})


async def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == code
    assert int(response.headers["Retry-After"]) >= 1
    return body["error"]


async def test_uploads_per_minute_per_key_get_429_with_retry_after(make_client, settings, corpus) -> None:  # type: ignore[no-untyped-def]
    client = await _client(make_client, settings, GatedEngine(), uploads_per_minute=6, upload_burst=2)
    assert [(await _post(client, corpus, "alice")).status for _ in range(2)] == [202, 202]
    response = await _post(client, corpus, "alice")
    error = await _assert_error(response, 429, "rate_limited")
    assert error["type"] == "rate_limit_error" and 1 <= int(response.headers["Retry-After"]) <= 10
    # The OpenAI-compatible route shares the key's bucket; another key has its own.
    await _assert_error(await _post(client, corpus, "alice", "/v1/audio/transcriptions"), 429, "rate_limited")
    assert (await _post(client, corpus, "bob")).status == 202


async def test_unfinished_jobs_per_key_get_429_until_they_finish(make_client, settings, corpus) -> None:  # type: ignore[no-untyped-def]
    engine = GatedEngine(go=False)
    client = await _client(make_client, settings, engine, max_unfinished_jobs=2, uploads_per_minute=0)
    assert [(await _post(client, corpus, "alice")).status for _ in range(2)] == [202, 202]
    await _assert_error(await _post(client, corpus, "alice"), 429, "too_many_jobs")
    assert (await _post(client, corpus, "bob")).status == 202
    engine.go.set()
    for _ in range(200):
        if (await _post(client, corpus, "alice")).status == 202:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("uploads stayed refused after the jobs finished")


def _slow_multipart(data: bytes, release: asyncio.Event) -> tuple[str, AsyncIterator[bytes]]:
    boundary = "slowboundary1234"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    async def body() -> AsyncIterator[bytes]:
        yield head + data[:1000]
        await release.wait()
        yield data[1000:] + f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body()


async def test_concurrent_uploads_past_the_bound_wait_then_get_503(make_client, settings, corpus) -> None:  # type: ignore[no-untyped-def]
    client = await _client(make_client, settings, GatedEngine(), max_concurrent_uploads=1, upload_wait_s=0.3,
                           uploads_per_minute=0)
    release = asyncio.Event()
    content_type, body = _slow_multipart((corpus / "pocketsphinx_cards_001.wav").read_bytes(), release)
    headers = {"Authorization": f"Bearer {KEYS['alice']}", "Content-Type": content_type}
    slow = asyncio.create_task(client.post("/v1/jobs", data=body, headers=headers))
    await asyncio.sleep(0.2)  # the slow upload holds the only slot
    error = await _assert_error(await _post(client, corpus, "bob"), 503, "busy")
    assert "busy" in error["message"]
    release.set()
    assert (await slow).status == 202
    assert (await _post(client, corpus, "bob")).status == 202  # the slot is free again
    gate = client.server.app[UPLOAD_GATE].stats()
    assert (gate["in_progress"], gate["refused"]["busy"]) == (0, 1)
