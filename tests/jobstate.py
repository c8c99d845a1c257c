"""Putting a job in a status by hand, as a crash or an earlier run would have left it."""

from __future__ import annotations

import time
from typing import Any

from stt_server.jobs.job import Status
from stt_server.jobs.store import EventRecord, Store

EVENT_FOR = {Status.QUEUED: "job.requeued", Status.RUNNING: "job.started", Status.COMPLETED: "job.completed",
             Status.FAILED: "job.failed", Status.CANCELLED: "job.cancelled"}


async def settle(store: Store, job_id: str, to: Status, *, transcript: dict[str, Any] | None = None,
                 **changes: Any) -> None:
    """Move the job to ``to`` from whatever status it has, with the event that status would bring."""
    applied = await store.transition(job_id, to, tuple(Status), EventRecord(EVENT_FOR[to], {}, time.time()),
                                     changes=changes, transcript=transcript)
    assert applied is not None, f"job {job_id} is not in the store"
