"""A front server over a fleet: two more copies of this server (embedded engine, their own
processes) as the upstreams of one engine, over real HTTP on loopback.

(a) a multi-chunk job completes through them with the local engine's WER (within 1 point);
(b) one of them is SIGKILLed mid-job: the job completes on the other, no finished chunk is lost
    or sent again, and the dead one's circuit opens;
(c) restarted on its port, it closes its circuit at the first request after the cool-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient

from stt_server.jobs.events import Event
from stt_server.settings import Settings
from tests.conftest import services_of, upload, wait_job
from tests.corpus import build_long_audio, wer
from tests.serverproc import Server, free_port, running_server

MakeClient = Callable[..., Awaitable[TestClient]]
FLEET_ENV = {"STT_LIMITS_UPLOADS_PER_MINUTE": "0", "STT_LIMITS_MAX_UNFINISHED_JOBS": "0"}
COOLDOWN_S = 2.0


@contextlib.contextmanager
def inference_server(data: Path, port: int) -> Iterator[Server]:
    """A copy of this server on the embedded engine, at ``port``."""
    with running_server(data, env=FLEET_ENV, port=port) as server:
        yield server


def upstream(name: str, port: int) -> dict[str, Any]:
    return dict(engine="fleet", name=name, base_url=f"http://127.0.0.1:{port}/v1", model="tiny.en", concurrency=1,
                timeout_s=120.0, connect_timeout_s=2.0, retries=4, retry_base_s=0.05, retry_max_s=0.2,
                circuit_threshold=1, circuit_cooldown_s=COOLDOWN_S)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Three different recordings (about 40 s of corpus speech each) and their reference texts."""
    out = {}
    for name, gap in (("a", 0.6), ("b", 0.8), ("c", 1.0)):
        path = tmp_path_factory.mktemp("fleet") / f"{name}.wav"
        placed = build_long_audio(path, 40.0, gap_s=gap)
        out[name] = (path, " ".join(text for text, _, _ in placed))
    return out


@contextlib.asynccontextmanager
async def watching(client: TestClient) -> AsyncIterator[asyncio.Queue[Event]]:
    bus = services_of(client).bus
    queue = bus.subscribe(None)
    try:
        yield queue
    finally:
        bus.unsubscribe(None, queue)


async def until(queue: asyncio.Queue[Event], match: Callable[[Event], bool], timeout: float = 120.0) -> Event:
    async with asyncio.timeout(timeout):
        while not match(event := await queue.get()):
            pass
    return event


async def upstreams(client: TestClient) -> dict[str, Any]:
    stats: dict[str, Any] = (await (await client.get("/v1/admin/stats")).json())["engines"]["fleet"]["upstreams"]
    return stats


async def transcript_text(client: TestClient, job_id: str) -> str:
    return await (await client.get(f"/v1/jobs/{job_id}/transcript?format=text")).text()


async def job_events(client: TestClient, job_id: str) -> list[Event]:
    return await services_of(client).bus.history(job_id)


def local_text(server: Server, path: Path) -> str:
    """The same audio on an inference server's own embedded engine, as one job."""
    job = server.wait(server.submit(path)["id"], timeout=300)
    assert job["status"] == "completed", job
    with urllib.request.urlopen(f"{server.base}/v1/jobs/{job['id']}/transcript?format=text", timeout=60) as r:
        return str(r.read().decode())


async def test_a_front_server_over_a_fleet_survives_a_kill_and_takes_the_server_back(
    make_client: MakeClient, settings: Settings, speech: dict[str, tuple[Path, str]],
) -> None:
    ports = {"one": free_port(), "two": free_port()}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        fleet = {name: stack.enter_context(inference_server(Path(tmp) / name, port)) for name, port in ports.items()}
        front = await make_client(settings.with_overrides(
            local={"enabled": False}, engine={"default": "fleet"},
            pipeline={"max_chunk_s": 15.0, "min_chunk_s": 5.0, "silence_search_s": 3.0},
            upstreams=[upstream(name, port) for name, port in ports.items()]))

        # (a) through both, with the embedded engine's accuracy.
        path, reference = speech["a"]
        job = await wait_job(front, (await upload(front, path))["id"], timeout=300)
        assert job["status"] == "completed" and job["progress"]["chunks_total"] >= 3, job
        front_text = await transcript_text(front, job["id"])
        local = await asyncio.to_thread(local_text, fleet["one"], path)
        front_wer, local_wer = wer(reference, front_text), wer(reference, local)
        assert abs(front_wer - local_wer) <= 0.01, (front_wer, local_wer, front_text, local)
        stats = await upstreams(front)
        assert stats["one"]["requests_by_status"].get("200", 0) >= 1
        assert stats["two"]["requests_by_status"].get("200", 0) >= 1
        assert stats["one"]["upload_format"] == "opus@32k"  # the servers take the default format

        # (b) SIGKILL "two" once the job has finished its first chunk.
        path, _ = speech["b"]
        async with watching(front) as events:
            job = await upload(front, path)
            await until(events, lambda e: e.name == "chunk.completed" and e.job_id == job["id"])
            fleet["two"].process.kill()
            done = await wait_job(front, job["id"], timeout=300)
        assert done["status"] == "completed", done
        total = done["progress"]["chunks_total"]
        assert done["progress"]["chunks_done"] == total > 1
        history = await job_events(front, job["id"])
        completed = [e.data["index"] for e in history if e.name == "chunk.completed"]
        assert sorted(completed) == list(range(total))  # each chunk finished exactly once
        finished_at = {e.data["index"]: e.id for e in history if e.name == "chunk.completed"}
        assert not [e for e in history if e.name == "chunk.started" and e.id > finished_at[e.data["index"]]]
        stats = await upstreams(front)
        assert stats["two"]["circuit_opened_total"] >= 1 and stats["two"]["circuit"] in ("open", "half_open")
        assert services_of(front).bus.counts["upstream.circuit_opened"] >= 1

        # (c) back on its port: after the cool-down, the first request to it closes the circuit.
        stack.enter_context(inference_server(Path(tmp) / "two-again", ports["two"]))
        async with asyncio.timeout(COOLDOWN_S + 30):
            while (await upstreams(front))["two"]["circuit"] != "half_open":
                await asyncio.sleep(0.1)
        path, _ = speech["c"]
        async with watching(front) as events:
            job = await upload(front, path)
            closed = await until(events, lambda e: e.name == "upstream.circuit_closed")
            assert closed.data["upstream"] == "two"
            assert (await wait_job(front, job["id"], timeout=300))["status"] == "completed"
        stats = await upstreams(front)
        assert stats["two"]["circuit"] == "closed" and stats["two"]["consecutive_failures"] == 0
