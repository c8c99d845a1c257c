"""Continuous batching for the embedded engine: chunks from any job, decoded together.

Every chunk the dispatch runner lets into the local engine waits here, in arrival order. A model
slot (``workers`` of them) takes the oldest waiting chunk and as many others that can share its
decoder call as the batch holds (``batch_size``), waiting at most ``wait_s`` for company when fewer
are there, so a lone short job is never held back. After the round, finished chunks are answered
and unfinished ones (a chunk whose speech ran past its window) go back to the front of the line,
so the next round is refilled from them and then from whatever arrived meanwhile.

Per-chunk promises hold: each caller gets its own chunk's transcript; a caller that is cancelled
(its job was cancelled or failed) leaves the line, or has its result dropped if its round is
already running, without touching the others; a round that raises is run again one chunk at a
time, so only the chunk that fails gets the error. The number of chunks held here is bounded by
the runner's concurrency for the engine (``workers * batch_size``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import structlog

from stt_server.audio.transcript import Transcript
from stt_server.engines.base import ChunkRequest
from stt_server.engines.whisper_batch import Cursor

log = structlog.get_logger(__name__)

T = TypeVar("T")
RunRound = Callable[[list[Cursor]], int]
"""Advance each cursor by one window (blocking; called in a worker thread); the windows it encoded."""


@dataclass
class _Item:
    cursor: Cursor
    future: asyncio.Future[Transcript]
    error: BaseException | None = None


@dataclass
class Batcher:
    run_round: RunRound
    batch_size: int
    wait_s: float
    workers: int = 1
    clock: Callable[[], float] = time.monotonic
    _line: collections.deque[_Item] = field(default_factory=collections.deque)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _model: asyncio.Semaphore = field(init=False)
    rounds: int = 0
    items: int = 0  # chunks taken into rounds (a chunk counts once per round it is in)
    windows: int = 0  # windows through the encoder (an open tail read from its window adds none)
    busy_s: float = 0.0

    def __post_init__(self) -> None:
        self._model = asyncio.Semaphore(self.workers)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._serve(), name=f"batcher-{n}") for n in range(self.workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for item in self._line:
            item.future.cancel()
        self._line.clear()

    async def submit(self, request: ChunkRequest) -> Transcript:
        """The chunk's transcript; raises what its rounds raised. Cancelling the caller drops the chunk."""
        item = _Item(Cursor(request), asyncio.get_running_loop().create_future())
        self._line.append(item)
        self._arrived.set()
        return await item.future  # cancelled with the caller: the line drops it

    async def call(self, work: Callable[[], T]) -> T:
        """Other model work (a language detection), in a thread, in one of the rounds' model slots."""
        async with self._model:
            return await asyncio.to_thread(work)

    @property
    def waiting(self) -> int:
        return sum(1 for item in self._line if not item.future.done())

    def stats(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "batch_wait_ms": round(self.wait_s * 1000, 1),
                "rounds": self.rounds, "windows": self.windows, "waiting": self.waiting,
                "mean_batch": round(self.items / self.rounds, 2) if self.rounds else 0.0,
                "busy_seconds": round(self.busy_s, 3)}

    async def _serve(self) -> None:
        while True:
            batch = await self._take()
            if not batch:
                continue
            async with self._model:
                began = self.clock()
                try:
                    await asyncio.to_thread(self._run, batch)
                finally:
                    self.rounds += 1
                    self.items += len(batch)
                    self.busy_s += self.clock() - began
            self._settle(batch)

    async def _take(self) -> list[_Item]:
        """The next batch: the oldest live chunk and its companions, filled for at most ``wait_s``."""
        while True:
            self._drop_dead()
            if self._line:
                break
            self._arrived.clear()
            await self._arrived.wait()
        batch = self._pick([])
        deadline = self.clock() + self.wait_s
        while len(batch) < self.batch_size and (left := deadline - self.clock()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break
            batch = self._pick(batch)
        return [item for item in batch if not item.future.done()]

    def _pick(self, batch: list[_Item]) -> list[_Item]:
        """Move chunks from the line into ``batch``, in line order, while they fit and share its key."""
        self._drop_dead()
        key = batch[0].cursor.batch_key if batch else (self._line[0].cursor.batch_key if self._line else None)
        kept: collections.deque[_Item] = collections.deque()
        while self._line:
            item = self._line.popleft()
            if len(batch) < self.batch_size and item.cursor.batch_key == key:
                batch.append(item)
            else:
                kept.append(item)
        self._line = kept
        return batch

    def _drop_dead(self) -> None:
        if any(item.future.done() for item in self._line):
            self._line = collections.deque(item for item in self._line if not item.future.done())

    def _run(self, batch: list[_Item]) -> None:
        """One round; when it raises, each chunk alone, so the error stays with the chunk that has it."""
        try:
            # the count first, then the sum: ``self.windows += run_round(...)`` reads the total before the
            # round and would lose a concurrent round's windows when workers > 1
            encoded = self.run_round([item.cursor for item in batch])
            self.windows += encoded
            return
        except Exception as exc:  # noqa: BLE001 - isolated below
            if len(batch) == 1:
                batch[0].error = exc
                return
            log.warning("batch_round_failed", windows=len(batch), error=str(exc))
        for item in batch:
            try:
                encoded = self.run_round([item.cursor])
                self.windows += encoded
            except Exception as exc:  # noqa: BLE001 - this chunk's own failure
                item.error = exc

    def _settle(self, batch: list[_Item]) -> None:
        again = []
        for item in batch:
            if item.future.done():  # its caller went away while the round ran
                continue
            if item.error is not None:
                item.future.set_exception(item.error)
            elif item.cursor.finished:
                item.future.set_result(item.cursor.transcript())
            else:
                again.append(item)
        if again:
            self._line.extendleft(reversed(again))
            self._arrived.set()
