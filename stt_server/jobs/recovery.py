"""Start-up recovery after a stop or a crash: every unfinished job runs again, nothing is orphaned.

Jobs left queued or running are checked against their audio (present, and still hashing to its
name) and queued again; a job whose audio is gone or damaged fails with a clear error; spool files
that no job refers to (an upload cut short between filing the audio and recording its job) are
removed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable

import structlog

from stt_server.jobs.job import Job, Status
from stt_server.jobs.lifecycle import Lifecycle
from stt_server.jobs.spool import Spool

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Recovery:
    requeued: int
    failed: int
    orphans_removed: int


def _audio_problems(spool: Spool, jobs: list[Job]) -> dict[str, str]:
    """Job id -> what is wrong with its audio, for the jobs whose audio cannot be used."""
    problems: dict[str, str] = {}
    verdicts: dict[str, str | None] = {}
    for job in jobs:
        if job.sha256 not in verdicts:
            if not spool.path_for(job.sha256).exists():
                verdicts[job.sha256] = "the job's audio is missing from the spool"
            elif not spool.verify(job.sha256):
                verdicts[job.sha256] = "the job's audio in the spool is damaged (its hash does not match)"
            else:
                verdicts[job.sha256] = None
        if verdicts[job.sha256]:
            problems[job.id] = verdicts[job.sha256]  # type: ignore[assignment]
    return problems


def _orphans(spool: Spool, referenced: set[str]) -> int:
    removed = 0
    for name in spool.stored_hashes():
        if name not in referenced and spool.remove(name):
            removed += 1
    return removed


async def recover(lifecycle: Lifecycle, enqueue: Callable[[Job], Awaitable[None]]) -> Recovery:
    """Queue unfinished jobs again, fail those whose audio is unusable, remove orphaned audio."""
    store, spool = lifecycle.store, lifecycle.spool
    jobs = await store.unfinished_jobs()
    problems = await asyncio.to_thread(_audio_problems, spool, jobs)
    for job in jobs:
        if job.id in problems:
            await lifecycle.fail(job.id, problems[job.id])
            continue
        if job.status is Status.RUNNING:
            await lifecycle.requeue(job.id, "the server stopped while it ran")
        await enqueue(job)
    orphans = await asyncio.to_thread(_orphans, spool, await store.all_sha256())
    report = Recovery(requeued=len(jobs) - len(problems), failed=len(problems), orphans_removed=orphans)
    if jobs or orphans:
        log.info("recovered", requeued=report.requeued, failed=report.failed, orphans_removed=orphans)
    return report
