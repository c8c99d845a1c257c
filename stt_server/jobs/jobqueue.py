"""The in-memory job queue: by priority, with ageing, and fair between clients.

Ordering is a pure function of the waiting entries and the time (:func:`schedule`): a job's
priority rank improves by one step for every ``ageing_s`` it has waited, so a low-priority job
is never starved; within a rank, clients take turns (each client's n-th waiting job comes after
every other client's first n), so one client's hundred jobs do not hold up another's single one;
ties go to the earlier arrival.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from stt_server.errors import TooManyRequests
from stt_server.jobs.job import PRIORITIES

PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    priority: str
    seq: int
    enqueued_at: float
    client: str = ""


def effective_rank(entry: QueuedJob, now: float, ageing_s: float) -> int:
    """The priority rank after ageing: one step better per ``ageing_s`` waited, never below 0."""
    rank = PRIORITY_RANK[entry.priority]
    if ageing_s <= 0:
        return rank
    return max(0, rank - int(max(0.0, now - entry.enqueued_at) // ageing_s))


def schedule(entries: Iterable[QueuedJob], now: float, ageing_s: float) -> list[QueuedJob]:
    """The order in which waiting jobs will run."""
    ranked = sorted(entries, key=lambda e: (effective_rank(e, now, ageing_s), e.seq))
    turns: dict[tuple[int, str], int] = {}
    keyed = []
    for entry in ranked:
        rank = effective_rank(entry, now, ageing_s)
        turn = turns.get((rank, entry.client), 0)
        turns[(rank, entry.client)] = turn + 1
        keyed.append(((rank, turn, entry.seq), entry))
    return [entry for _, entry in sorted(keyed, key=lambda pair: pair[0])]


@dataclass
class JobQueue:
    """Job ids waiting for a worker. Jobs themselves live in the store."""

    max_queued: int = 1000
    ageing_s: float = 600.0
    clock: Callable[[], float] = time.time
    _entries: dict[str, QueuedJob] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._entries

    async def put(self, job_id: str, priority: str, *, client: str = "", force: bool = False,
                  enqueued_at: float | None = None) -> None:
        """Queue a job; past ``max_queued`` raise 429 unless ``force`` (jobs resumed at start-up)."""
        if not force and len(self._entries) >= self.max_queued:
            raise TooManyRequests("the queue is full; try again later", headers={"Retry-After": "30"})
        async with self._cond:
            when = self.clock() if enqueued_at is None else enqueued_at
            self._entries[job_id] = QueuedJob(job_id, priority, next(self._seq), when, client)
            self._cond.notify()

    async def get(self) -> str:
        """Wait for and take the next job id."""
        async with self._cond:
            while not self._entries:
                await self._cond.wait()
            chosen = schedule(self._entries.values(), self.clock(), self.ageing_s)[0]
            del self._entries[chosen.job_id]
            return chosen.job_id

    def remove(self, job_id: str) -> bool:
        """Take a job out of the queue."""
        return self._entries.pop(job_id, None) is not None

    def order(self) -> list[QueuedJob]:
        return schedule(self._entries.values(), self.clock(), self.ageing_s)

    def position(self, job_id: str) -> int | None:
        """1-based place in line, or None when not queued."""
        if job_id not in self._entries:
            return None
        return self.positions().get(job_id)

    def positions(self) -> dict[str, int]:
        """Every waiting job's 1-based place in line, from one ordering of the queue."""
        return {e.job_id: n for n, e in enumerate(self.order(), start=1)}

    def depth_by_priority(self) -> dict[str, int]:
        depth = {name: 0 for name in PRIORITIES}
        for entry in self._entries.values():
            depth[entry.priority] += 1
        return depth

    def oldest(self) -> QueuedJob | None:
        """The job that has waited longest."""
        return min(self._entries.values(), key=lambda e: e.enqueued_at, default=None)
