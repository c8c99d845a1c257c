"""The in-memory priority queue of job ids: high before normal before low, FIFO within a priority."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

from .errors import TooManyRequests
from .job import PRIORITIES

PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}


def order_key(priority: str, seq: int) -> tuple[int, int]:
    """Sort key of a queued job: by priority rank, then arrival order."""
    return (PRIORITY_RANK[priority], seq)


@dataclass
class JobQueue:
    """Job ids waiting for a worker. Jobs themselves live in the store."""

    max_queued: int = 1000
    _heap: list[tuple[tuple[int, int], str]] = field(default_factory=list)
    _priority: dict[str, str] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __len__(self) -> int:
        return len(self._priority)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._priority

    async def put(self, job_id: str, priority: str, *, force: bool = False) -> None:
        """Queue a job; past ``max_queued`` raise 429 unless ``force`` (jobs resumed at start-up)."""
        if not force and len(self._priority) >= self.max_queued:
            raise TooManyRequests("the queue is full; try again later", headers={"Retry-After": "30"})
        async with self._cond:
            heapq.heappush(self._heap, (order_key(priority, next(self._seq)), job_id))
            self._priority[job_id] = priority
            self._cond.notify()

    async def get(self) -> str:
        """Wait for and take the next job id."""
        async with self._cond:
            while True:
                while self._heap:
                    _, job_id = heapq.heappop(self._heap)
                    if self._priority.pop(job_id, None) is not None:
                        return job_id
                await self._cond.wait()

    def remove(self, job_id: str) -> bool:
        """Take a job out of the queue (lazily: its heap entry is skipped when reached)."""
        return self._priority.pop(job_id, None) is not None

    def position(self, job_id: str) -> int | None:
        """1-based place in line, or None when not queued."""
        if job_id not in self._priority:
            return None
        live = sorted(key for key, jid in self._heap if jid in self._priority)
        mine = next(key for key, jid in self._heap if jid == job_id and jid in self._priority)
        return live.index(mine) + 1

    def depth_by_priority(self) -> dict[str, int]:
        depth = {name: 0 for name in PRIORITIES}
        for priority in self._priority.values():
            depth[priority] += 1
        return depth
