"""A fake engine whose start-up and transcriptions wait on events the test controls."""

from __future__ import annotations

import asyncio
from typing import Any

from stt_server.engines.base import ChunkRequest, EngineLimits
from stt_server.settings import Settings
from stt_server.audio.transcript import Segment, Transcript

SAMPLE_RATE = 16_000


class GatedEngine:
    """Engine Protocol: ``start`` waits for ``loaded``, ``transcribe`` for ``go``; both set by default."""

    name = "gated"
    model = "gated-1"

    def __init__(self, *, loaded: bool = True, go: bool = True, fail_start: bool = False) -> None:
        self.limits = EngineLimits(max_chunk_s=30.0, concurrency=2)
        self.loaded, self.go = asyncio.Event(), asyncio.Event()
        if loaded:
            self.loaded.set()
        if go:
            self.go.set()
        self.fail_start = fail_start
        self.started = False
        self.calls = 0

    @property
    def ready(self) -> bool:
        return self.started

    async def start(self) -> None:
        await self.loaded.wait()
        if self.fail_start:
            raise RuntimeError("model file is corrupt")
        self.started = True

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        assert self.started, "a worker took a job before the engine was ready"
        await self.go.wait()
        self.calls += 1
        seconds = len(request.samples) / SAMPLE_RATE
        return Transcript(segments=(Segment(0.0, round(seconds, 3), f" chunk {request.chunk_index}"),),
                          duration=seconds)

    def stats(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model, "ready": self.ready, "calls": self.calls}

    async def close(self) -> None:
        self.started = False


def gated_settings(settings: Settings) -> Settings:
    """Settings whose default engine is the gated one."""
    return settings.with_overrides(engine={"default": GatedEngine.name})


def factory_for(engine: GatedEngine):  # type: ignore[no-untyped-def]
    """An ``engine_factory`` for ``create_app`` that serves this one engine."""
    return lambda settings: {engine.name: engine}
