"""Continuous batching in the embedded engine: chunks from several jobs share model calls, and each
still gets its own result, its own failure and its own cancellation.

The line (``Batcher``) is tested with a round function that stands in for the model and is held at
a gate, so what is in which round is known exactly; the real model is tested through the engine:
chunks of different speech decoded together come back to the chunk they belong to.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from stt_server.audio.media import extract_pcm
from stt_server.audio.transcript import Segment
from stt_server.engines.base import ChunkRequest
from stt_server.engines.batcher import Batcher
from stt_server.engines.local import LocalEngine
from stt_server.engines.whisper_batch import Cursor
from stt_server.settings import LocalEngineSettings
from tests.corpus import references, speech_files, wer


class Rounds:
    """A model stand-in: each round is recorded, can be held at a gate, and says which chunk it saw.
    A chunk whose first sample is ``rounds_needed`` asks for that many rounds (a continuation)."""

    def __init__(self, poison: int | None = None) -> None:
        self.seen: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.poison = poison

    def __call__(self, cursors: list[Cursor]) -> int:
        self.seen.append([c.request.chunk_index or 0 for c in cursors])
        self.entered.set()
        self.gate.wait(timeout=60)
        if self.poison is not None and any(c.request.chunk_index == self.poison for c in cursors):
            raise RuntimeError(f"chunk {self.poison} breaks the model")
        for c in cursors:
            if c.features is None:
                c.features, c.content_frames = np.zeros(1), int(c.request.samples[0])
            c.seek += 1
            c.segments.append(Segment(0.0, 1.0, f"chunk {c.request.chunk_index} round {c.seek}"))
        return len(cursors)


def request(index: int, rounds: int = 1) -> ChunkRequest:
    return ChunkRequest(samples=np.full(16, float(rounds), dtype=np.float32), job_id=f"job-{index % 2}",
                        chunk_index=index)


def held(batch_size: int, wait_s: float = 0.0) -> tuple[Rounds, Batcher]:
    """A running line whose rounds wait at a closed gate."""
    rounds = Rounds()
    rounds.gate.clear()
    batcher = Batcher(rounds, batch_size=batch_size, wait_s=wait_s)
    batcher.start()
    return rounds, batcher


async def started(batcher: Batcher, rounds: Rounds, *requests: ChunkRequest) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(batcher.submit(r)) for r in requests]
    await asyncio.to_thread(rounds.entered.wait, 60)
    return tasks


async def test_each_chunk_gets_its_own_result_and_batches_fill_in_line_order() -> None:
    rounds, batcher = held(3)
    first = await started(batcher, rounds, request(0))  # the first round starts alone: nobody waits for company
    rest = [asyncio.create_task(batcher.submit(request(i))) for i in range(1, 6)]
    await asyncio.sleep(0)
    rounds.gate.set()
    results = await asyncio.gather(*first, *rest)
    assert [r.segments[0].text for r in results] == [f"chunk {i} round 1" for i in range(6)]
    assert rounds.seen == [[0], [1, 2, 3], [4, 5]]
    assert batcher.stats()["rounds"] == 3 and batcher.stats()["windows"] == 6
    await batcher.close()


async def test_unfinished_chunks_go_back_to_the_front_and_share_the_next_round() -> None:
    rounds, batcher = held(2)
    long_one = await started(batcher, rounds, request(0, rounds=2))
    others = [asyncio.create_task(batcher.submit(request(i))) for i in (1, 2)]
    await asyncio.sleep(0)
    rounds.gate.set()
    done = await asyncio.gather(*long_one, *others)
    assert [s.text for s in done[0].segments] == ["chunk 0 round 1", "chunk 0 round 2"]
    assert rounds.seen == [[0], [0, 1], [2]]  # the continuation first, then the line in order
    await batcher.close()


async def test_a_cancelled_chunk_leaves_the_line_and_a_running_one_is_dropped_alone() -> None:
    rounds, batcher = held(2)
    running = await started(batcher, rounds, request(0), request(1))
    waiting = [asyncio.create_task(batcher.submit(request(i))) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    running[0].cancel()  # its round is already under way
    waiting[0].cancel()  # still in the line
    await asyncio.gather(running[0], waiting[0], return_exceptions=True)
    rounds.gate.set()
    results = await asyncio.gather(running[1], waiting[1], waiting[2])
    assert [r.segments[0].text for r in results] == ["chunk 1 round 1", "chunk 3 round 1", "chunk 4 round 1"]
    assert sorted(map(sorted, rounds.seen)) == [[0, 1], [3, 4]]  # chunk 2 never reached the model
    assert batcher.waiting == 0
    await batcher.close()


async def test_a_failing_chunk_fails_alone_and_its_round_mates_complete() -> None:
    rounds = Rounds(poison=2)
    batcher = Batcher(rounds, batch_size=4, wait_s=0.05)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(request(i))) for i in range(4)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], RuntimeError) and "chunk 2" in str(results[2])
    assert [r.segments[0].text for i, r in enumerate(results) if i != 2] == [
        "chunk 0 round 1", "chunk 1 round 1", "chunk 3 round 1"]
    assert rounds.seen[0] == [0, 1, 2, 3]  # tried together first, then one by one
    assert sorted(x for r in rounds.seen[1:] for x in r) == [0, 1, 2, 3]
    await batcher.close()


async def test_other_model_work_waits_for_the_round_in_progress() -> None:
    rounds, batcher = held(2)
    chunk = await started(batcher, rounds, request(0))
    order: list[str] = []
    other = asyncio.create_task(batcher.call(lambda: order.append("detect")))
    await asyncio.sleep(0.05)
    assert order == []  # held while the round runs
    rounds.gate.set()
    await asyncio.gather(*chunk, other)
    assert order == ["detect"]
    await batcher.close()


@pytest.fixture(scope="module")
def clips() -> list[tuple[np.ndarray, str]]:
    """Six different corpus recordings as 16 kHz samples, with what is said in them."""
    picked = [p for p in speech_files() if len(references()[p.name].split()) >= 6][:6]
    assert len(picked) == 6
    return [(extract_pcm(Path(p), 0.0, 30.0, 60.0), references()[p.name]) for p in picked]


async def test_real_chunks_of_two_jobs_decoded_together_come_back_to_their_own_chunk(
        clips: list[tuple[np.ndarray, str]]) -> None:
    engine = LocalEngine(LocalEngineSettings(batch_size=3, batch_wait_ms=200))
    await engine.start()
    try:
        requests = [ChunkRequest(samples=s, language="en", job_id=f"job-{i % 2}", chunk_index=i)
                    for i, (s, _) in enumerate(clips)]
        results = await asyncio.gather(*(engine.transcribe(r) for r in requests))
        stats = engine.stats()
    finally:
        await engine.close()
    assert stats["rounds"] < stats["windows"]  # some windows really shared a decoder call
    # where the model's time went: every window through the encoder once, one decoder call per round,
    # and no more time in the parts than the rounds took
    calls, seconds = stats["model_calls"], stats["model_seconds"]
    assert calls["encoder"] == stats["windows"] and calls["decoder"] == stats["rounds"]
    assert calls["features"] == len(clips)
    assert all(seconds[part] > 0 for part in ("features", "encoder", "decoder"))
    assert sum(seconds.values()) <= stats["busy_seconds"] + 0.01
    texts = [" ".join(s.text for s in r.segments) for r in results]
    for i, (_, reference) in enumerate(clips):
        own = wer(reference, texts[i])
        assert own < 0.35, (i, texts[i])
        assert all(own < wer(other, texts[i]) for j, (_, other) in enumerate(clips) if j != i), i


async def test_two_jobs_share_batches_and_cancelling_one_leaves_the_other_whole(
        client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import services_of, upload, wait_job
    from tests.corpus import build_long_audio

    long_one, other = tmp_path / "long.wav", tmp_path / "other.wav"
    build_long_audio(long_one, min_duration_s=240.0)
    placed = build_long_audio(other, min_duration_s=90.0, gap_s=1.0)
    svc = services_of(client)
    engine = svc.dispatch["local"].engine
    doomed = await upload(client, long_one, language="en")
    kept = await upload(client, other, language="en")
    deadline = asyncio.get_running_loop().time() + 120
    while engine.stats()["rounds"] < 2:  # both jobs' chunks are in the line and calls have run
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert (await client.delete(f"/v1/jobs/{doomed['id']}")).status == 204
    done = await wait_job(client, kept["id"])
    assert done["status"] == "completed", done
    text = (await (await client.get(f"/v1/jobs/{kept['id']}/transcript")).json())["text"]
    assert wer(" ".join(t for t, _, _ in placed), text) < 0.15
    gone = await (await client.get(f"/v1/jobs/{doomed['id']}")).json()
    assert gone["status"] == "cancelled"
    assert engine.stats()["waiting"] == 0  # nothing of the cancelled job is left in the line
    assert engine.stats()["mean_batch"] > 1
