"""Planning chunks while the file is still being measured, so the first ones start at once.

The loudness envelope is decoded in a thread and handed over block by block; every time another
chunk's worth has arrived, the cuts it settles (:func:`chunking.settled_chunks`, always a prefix
of the full plan) are released. The last cuts come from :func:`chunking.plan_chunks` over the
whole envelope.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncGenerator, Iterator

import numpy as np

from stt_server.audio.decoded import DecodedAudio
from stt_server.audio.chunking import Chunk, ChunkPolicy, choose_chunk_length, plan_chunks, settled_chunks
from stt_server.audio.media import envelope_blocks

_DONE = object()


@dataclass(frozen=True)
class PlanStep:
    """Chunks newly decided, the chunk count as now estimated, and whether the plan is complete."""

    chunks: list[Chunk]
    total: int
    final: bool


def estimate_total(settled: list[Chunk], duration_s: float, length: float) -> int:
    """Chunks settled plus those the rest of the file should need (exact once the plan is final)."""
    start = settled[-1].end if settled else 0.0
    return len(settled) + max(1, math.ceil((duration_s - start) / length - 1e-9))


async def stream_plan(path: Path, duration_s: float, policy: ChunkPolicy, parallelism: int,
                      frame_s: float, timeout_s: float,
                      decoded: DecodedAudio | None = None) -> AsyncGenerator[PlanStep, None]:
    """Plan steps for the audio at ``path`` as its envelope is decoded; with ``decoded``, the samples
    measured are written there too, so every chunk released can be read back from it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def levels() -> Iterator[np.ndarray]:
        if decoded is None:
            yield from envelope_blocks(path, frame_s, timeout_s)
            return
        with decoded.writing():
            yield from envelope_blocks(path, frame_s, timeout_s, sink=decoded.write)

    def produce() -> None:
        try:
            for block in levels():
                loop.call_soon_threadsafe(queue.put_nowait, block)
                if stop.is_set():
                    return  # leaving the generator kills ffmpeg
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            loop.call_soon_threadsafe(queue.put_nowait, exc)

    producer = loop.run_in_executor(None, produce)
    length = choose_chunk_length(duration_s, policy.max_chunk_s, parallelism, policy.min_chunk_s)
    parts: list[np.ndarray] = []
    frames = planned_at = 0
    released: list[Chunk] = []
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            parts.append(item)  # type: ignore[arg-type]
            frames += len(item)  # type: ignore[arg-type]
            if (frames - planned_at) * frame_s < length:
                continue  # replan once another chunk's worth has arrived
            planned_at = frames
            new = settled_chunks(np.concatenate(parts), frame_s, duration_s, policy, parallelism,
                                 after=released[-1] if released else None)
            if new:
                released += new
                yield PlanStep(new, estimate_total(released, duration_s, length), final=False)
        envelope = np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)
        full = plan_chunks(envelope, frame_s, duration_s, policy, parallelism)
        if full[: len(released)] != released:
            raise AssertionError("a settled chunk changed in the full plan")
        yield PlanStep(full[len(released):], len(full), final=True)
    finally:
        stop.set()
        await asyncio.wait([producer])
