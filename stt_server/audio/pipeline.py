"""The ParallelProcessor: plan chunks, extract each when needed, transcribe under a semaphore, merge.

Finished chunks are persisted as they complete, so a resumed job redoes only what it lacks, and
both the whole file and each chunk go through the cache, so no audio reaches an engine twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import structlog

from stt_server.cache.manager import CacheManager
from stt_server.cache.keys import job_chunk_key, job_file_key
from stt_server.audio.chunking import Chunk, ChunkPolicy, max_seconds_for_bytes
from stt_server.audio.deltas import emit_chunk_delta, emit_whole_delta
from stt_server.audio.detection import with_detected_language
from stt_server.engines.dispatch import Dispatch
from stt_server.engines.base import ChunkRequest, Engine, Upload
from stt_server.errors import EngineError, STTError
from stt_server.jobs.events import EventBus
from stt_server.jobs.job import Job
from stt_server.audio.decoded import DecodedAudio
from stt_server.audio.media import encode_upload, extract_pcm, int16_pcm, pcm_sha256
from stt_server.audio.merge import merge_transcripts
from stt_server.audio.planner import stream_plan
from stt_server.settings import PipelineSettings
from stt_server.jobs.store import EventRecord, Store
from stt_server.audio.transcript import Transcript
from stt_server.audio.upload_format import HEADER_BYTES, UploadFormat

log = structlog.get_logger(__name__)


class Interrupted(Exception):
    """The server is draining: the job stopped between chunks and resumes at the next start."""


@dataclass(frozen=True)
class Outcome:
    transcript: Transcript
    cached: bool


def chunk_policy(settings: PipelineSettings, engine: Engine) -> ChunkPolicy:
    """The planner's limits: ours, the engine's seconds, and the engine's upload bytes as seconds
    (at the worst-case size of the format it uploads in)."""
    limit = min(settings.max_chunk_s, engine.limits.max_chunk_s)
    if engine.limits.max_upload_bytes:
        limit = min(limit, max_seconds_for_bytes(engine.limits.max_upload_bytes, engine.limits.upload_bytes_per_s,
                                                 HEADER_BYTES))
    return ChunkPolicy(max_chunk_s=limit, min_chunk_s=min(settings.min_chunk_s, limit),
                       silence_search_s=min(settings.silence_search_s, limit / 2),
                       silence_db=settings.silence_db)


def _decode_and_hash(path: Path, chunk: Chunk, timeout_s: float, formats: tuple[UploadFormat, ...] = (),
                     decoded: DecodedAudio | None = None) -> tuple[np.ndarray, str, tuple[Upload, ...]]:
    """One hop off the loop per chunk: its 16 kHz samples (read back from the planning pass's
    ``decoded`` file, or else decoded from the upload), their hash (the chunk's cache key), and the
    chunk encoded in each format its engine uploads in (once, whatever the retries)."""
    samples = decoded.read(chunk.start, chunk.end) if decoded is not None else None
    if samples is None:
        samples = extract_pcm(path, chunk.start, chunk.end, timeout_s)
    pcm = int16_pcm(samples)
    return samples, pcm_sha256(pcm), tuple(Upload(f, encode_upload(pcm, f)) for f in formats)


async def _each(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk


@dataclass
class _Run:
    """One job's pass through the pipeline: what every chunk task needs."""

    job: Job
    engine: Engine
    path: Path
    done: dict[int, Transcript]
    total: int  # chunks in the plan (an estimate until planning ends)
    chunks: list[Chunk] = field(default_factory=list)  # planned so far
    decoded: DecodedAudio | None = None  # the samples the planning pass decoded, if this run planned


class Pipeline:
    """Runs one job from its spooled audio to a merged transcript."""

    def __init__(self, settings: PipelineSettings, store: Store, bus: EventBus,
                 cache: CacheManager | None, spool_dir: Path, dispatch: Dispatch, decoded_dir: Path) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.cache = cache
        self.spool_dir = spool_dir
        self.decoded_dir = decoded_dir
        self.dispatch = dispatch
        self.draining = False

    async def run(self, job: Job, engine: Engine) -> Outcome:
        key = job_file_key(job, engine)
        hit = await self.cache.get(key) if self.cache else None
        if hit is not None:
            await self.bus.emit("job.cache_hit", job.id, key=key.value)
            await emit_whole_delta(self.bus, job.id, Transcript.from_dict(hit))
            return Outcome(Transcript.from_dict(hit), cached=True)
        job = await with_detected_language(job, engine, self.spool_dir / job.sha256,
                                           self.settings.ffmpeg_timeout_s, self.dispatch[engine.name])
        run = _Run(job, engine, self.spool_dir / job.sha256, {}, 0)
        try:
            await self._transcribe_all(run, await self._chunks_to_do(run))
        finally:
            if run.decoded is not None:
                run.decoded.remove()
        merged = merge_transcripts([(c, run.done[c.index]) for c in run.chunks], job.duration_s,
                                   language=job.language)
        if self.cache:
            await self.cache.set(key, merged.to_dict())
        return Outcome(merged, cached=False)

    async def _chunks_to_do(self, run: _Run) -> AsyncIterator[Chunk]:
        """A resumed job's missing chunks, or a new plan's chunks as they are decided."""
        stored = await self.store.get_chunks(run.job.id)
        if stored and len(stored) == run.job.chunks_total:
            run.chunks = [Chunk(c.index, c.start, c.end, c.silent) for c in stored]
            run.done.update({c.index: Transcript.from_dict(c.result) for c in stored if c.result is not None})
            run.total = len(stored)
            await self.bus.emit("job.resumed", run.job.id, chunks_total=run.total, chunks_done=len(run.done))
            return _each([c for c in run.chunks if c.index not in run.done])
        if stored:  # planning was cut short: plan again (finished chunks come back from the cache)
            await self.store.clear_plan(run.job.id)
            await self.bus.emit("job.resumed", run.job.id, chunks_total=0, chunks_done=0, replanned=True)
        return self._plan(run)

    async def _plan(self, run: _Run) -> AsyncIterator[Chunk]:
        """Chunks as the planner decides them. Planning runs ahead on its own (it is quick), so the
        whole plan is stored early however slowly the chunks are taken."""
        ready: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()
        planning = asyncio.create_task(self._make_plan(run, ready), name=f"plan-{run.job.id}")
        try:
            while (item := await ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            planning.cancel()
            await asyncio.wait([planning])

    async def _make_plan(self, run: _Run, ready: asyncio.Queue[Chunk | BaseException | None]) -> None:
        began = time.perf_counter()
        run.decoded = DecodedAudio(self.decoded_dir / f"{run.job.id}.pcm")
        steps = stream_plan(run.path, run.job.duration_s, chunk_policy(self.settings, run.engine),
                            run.engine.limits.parallel_pieces, self.settings.frame_s, self.settings.ffmpeg_timeout_s,
                            run.decoded)
        try:
            async with contextlib.aclosing(steps):
                async for step in steps:
                    run.chunks += step.chunks
                    run.total = step.total
                    await self.store.save_plan(run.job.id, [(c.index, c.start, c.end, c.silent)
                                                            for c in step.chunks], step.total)
                    for chunk in step.chunks:
                        ready.put_nowait(chunk)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put_nowait(exc)
            return
        log.info("chunks_planned", chunks=run.total, seconds=round(time.perf_counter() - began, 3))
        await self.bus.emit("chunk.planned", run.job.id, chunks_total=run.total,
                            chunks=[[c.start, c.end] for c in run.chunks])
        ready.put_nowait(None)

    async def _transcribe_all(self, run: _Run, chunks: AsyncIterator[Chunk]) -> None:
        # Twice the engine's concurrency in flight: while the engine works on one set of chunks,
        # the next set is decoded and waits at the engine's door (its dispatch runner, shared by every job).
        limit = self.settings.chunk_concurrency or 2 * run.engine.limits.concurrency
        slots = asyncio.Semaphore(limit)
        try:
            async with contextlib.aclosing(chunks), asyncio.TaskGroup() as group:  # type: ignore[type-var]
                async for chunk in chunks:
                    await slots.acquire()
                    if self.draining:
                        slots.release()
                        break
                    group.create_task(self._chunk(run, chunk, slots))
        except* STTError as errors:
            raise errors.exceptions[0] from None
        if len(run.done) < run.total or len(run.done) < len(run.chunks):
            raise Interrupted(f"stopped with {len(run.done)} of {run.total} chunks done")

    async def _chunk(self, run: _Run, chunk: Chunk, slots: asyncio.Semaphore) -> None:
        try:
            key: str | None = None
            if chunk.silent:
                result = Transcript(segments=(), duration=chunk.duration)
                await self.bus.emit("chunk.skipped_silent", run.job.id, index=chunk.index)
            else:
                result, key = await self._transcribe_chunk(run, chunk)
            run.done[chunk.index] = result
            saved = result.to_dict()

            async def persist(record: EventRecord) -> int:  # the result and its event: both or neither
                return await self.store.complete_chunk(run.job.id, chunk.index, saved, key, record)

            await self.bus.emit_if("chunk.completed", run.job.id, {"index": chunk.index, "chunks_total": run.total},
                                   persist)
            await emit_chunk_delta(self.bus, run.job.id, run.done, chunk.index)
        finally:
            slots.release()

    async def _transcribe_chunk(self, run: _Run, chunk: Chunk) -> tuple[Transcript, str]:
        """The chunk's transcript, from the cache or the engine, and its cache key."""
        job, engine = run.job, run.engine
        runner = self.dispatch[engine.name]
        async with self.dispatch.decode_slots:  # shared by every job: one decode per usable core
            samples, digest, uploads = await asyncio.to_thread(
                _decode_and_hash, run.path, chunk, self.settings.ffmpeg_timeout_s, runner.upload_formats(),
                run.decoded)
        key = job_chunk_key(job, engine, digest)
        hit = await self.cache.get(key) if self.cache else None
        if hit is not None:
            await self.bus.emit("chunk.cache_hit", job.id, index=chunk.index)
            return Transcript.from_dict(hit), key.value
        request = ChunkRequest(samples=samples, language=job.language, prompt=job.prompt,
                               temperature=job.temperature, word_timestamps=job.word_timestamps,
                               job_id=job.id, chunk_index=chunk.index, task=job.task, uploads=uploads)
        del samples, uploads  # the request holds them now; nothing else should keep them past the call

        async def notify(name: str, data: dict[str, Any]) -> None:
            await self.bus.emit(name, job.id, index=chunk.index, **data)

        began = time.perf_counter()
        try:
            result = await runner.transcribe(request, notify)
        except EngineError as err:
            await self.bus.emit("chunk.failed", job.id, index=chunk.index, error=err.message)
            raise EngineError(f"chunk {chunk.index} ({chunk.start:.2f}-{chunk.end:.2f} s) failed: {err.message}",
                              retryable=False) from err
        log.info("chunk_transcribed", chunk=chunk.index, engine=engine.name,
                 audio_s=round(chunk.duration, 2), seconds=round(time.perf_counter() - began, 3))
        if self.cache:
            await self.cache.set(key, result.to_dict())
        return result, key.value
