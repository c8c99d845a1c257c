"""Retention: the audio and the transcripts of finished jobs are deleted after configurable times.

What is due is a pure function of the jobs and ``now``; the sweeper does the deleting, on a
timer, with an injectable clock. (The spool's size limit is enforced where uploads are filed,
in :meth:`Spool.commit`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable, Mapping

import structlog

from stt_server.cache.manager import CacheManager
from stt_server.engines.base import Engine
from stt_server.jobs.events import EventBus
from stt_server.jobs.job import Job, Status
from stt_server.cache.keys import job_cache_keys
from stt_server.settings import RetentionSettings
from stt_server.jobs.spool import Spool
from stt_server.jobs.store import RetentionRecord, Store

log = structlog.get_logger(__name__)


def _ended(job: Job) -> float:
    return job.finished_at if job.finished_at is not None else job.created_at


def _past(job: Job, now: float, ttl_s: float) -> bool:
    return job.status.finished and _ended(job) + ttl_s <= now


def due_for_deletion(records: Iterable[RetentionRecord], now: float, audio_ttl_s: float,
                     transcript_ttl_s: float) -> tuple[list[str], list[str]]:
    """The ids of the jobs whose audio, and of those whose transcript, are due for deletion.

    The spool keeps one file per sha256, shared by every job with the same audio: a job's
    audio is due only when every job sharing it has ended more than ``audio_ttl_s`` ago (or
    already had its audio deleted). ``records`` must include those sharing jobs.
    """
    records = list(records)
    needed = {r.job.sha256 for r in records
              if r.audio_deleted_at is None and not _past(r.job, now, audio_ttl_s)}
    audio = [r.job.id for r in records if r.audio_deleted_at is None
             and _past(r.job, now, audio_ttl_s) and r.job.sha256 not in needed]
    transcripts = [r.job.id for r in records
                   if r.transcript_deleted_at is None and _past(r.job, now, transcript_ttl_s)]
    return audio, transcripts


@dataclass(frozen=True)
class SweepResult:
    audio_job_ids: list[str]
    transcript_job_ids: list[str]
    files_removed: int


class RetentionSweeper:
    """Deletes what :func:`due_for_deletion` says, every ``sweep_interval_s``."""

    def __init__(self, settings: RetentionSettings, store: Store, spool: Spool, bus: EventBus, *,
                 cache: CacheManager | None = None, engines: Mapping[str, Engine] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.bus = bus
        self.cache = cache
        self.engines = engines or {}
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="retention-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.exception("retention_sweep_failed")
            await asyncio.sleep(self.settings.sweep_interval_s)

    async def sweep(self, now: float | None = None) -> SweepResult:
        """One pass: delete due audio files and transcripts; ``now`` defaults to the clock."""
        now = self.clock() if now is None else now
        s = self.settings
        mark = self.spool.commits  # an upload of the same audio after this keeps its file
        records = await self.store.retention_candidates(now - min(s.audio_ttl_s, s.transcript_ttl_s))
        audio_ids, transcript_ids = due_for_deletion(records, now, s.audio_ttl_s, s.transcript_ttl_s)
        jobs = {r.job.id: r.job for r in records}
        shas = {jobs[i].sha256 for i in audio_ids}
        kept = await asyncio.to_thread(self._remove_files, shas, mark)
        audio_ids = [i for i in audio_ids if jobs[i].sha256 not in kept]
        if audio_ids:
            await self.store.mark_audio_deleted(audio_ids, now)
        if transcript_ids:
            # The cache keys live with the chunk rows: gather them before the rows go.
            await self._forget([jobs[i] for i in transcript_ids])
            await self.store.expire_transcripts(transcript_ids, now)
        for job_id in audio_ids:
            await self.bus.emit("job.audio_expired", job_id)
        for job_id in transcript_ids:
            await self.bus.emit("job.transcript_expired", job_id)
        if audio_ids or transcript_ids:
            log.info("retention_swept", audio_jobs=len(audio_ids), files=len(shas) - len(kept),
                     transcripts=len(transcript_ids), spool_bytes=self.spool.used_bytes())
        return SweepResult(audio_ids, transcript_ids, len(shas) - len(kept))

    def _remove_files(self, shas: Iterable[str], mark: int) -> set[str]:
        """Delete spool files (one thread hop for the batch); returns those kept (uploaded again)."""
        return {sha for sha in shas if not self.spool.remove(sha, unless_committed_after=mark)}

    async def _forget(self, jobs: list[Job]) -> None:
        """Drop the jobs' cache entries too (whole file and chunks), or a cached copy would outlive them."""
        keys = [key for j in jobs if j.status is Status.COMPLETED
                for key in job_cache_keys(j, self.engines, await self.store.chunk_cache_keys(j.id))]
        if self.cache is not None and keys:
            await self.cache.invalidate(keys=keys)


@contextlib.asynccontextmanager
async def running_sweeper(settings: RetentionSettings, store: Store, spool: Spool, bus: EventBus, *,
                          cache: CacheManager | None = None,
                          engines: Mapping[str, Engine] | None = None) -> AsyncIterator[RetentionSweeper]:
    """A started sweeper, stopped on exit."""
    sweeper = RetentionSweeper(settings, store, spool, bus, cache=cache, engines=engines)
    sweeper.start()
    try:
        yield sweeper
    finally:
        await sweeper.stop()
