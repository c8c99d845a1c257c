"""The engine contract: every engine takes one chunk of 16 kHz mono audio and returns a Transcript."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..transcript import Transcript


@dataclass(frozen=True)
class EngineLimits:
    """What the chunk planner must respect for this engine."""

    max_chunk_s: float = 30.0
    max_upload_bytes: int | None = None
    concurrency: int = 2


@dataclass(frozen=True)
class ChunkRequest:
    """One chunk to transcribe. ``samples`` are float32 mono at 16 kHz; times are chunk-relative."""

    samples: np.ndarray
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    job_id: str | None = None
    chunk_index: int | None = None
    task: str = "transcribe"  # or "translate": the speech in English


@runtime_checkable
class Engine(Protocol):
    """A transcription engine. ``name`` and ``model`` go into cache keys."""

    name: str
    model: str
    limits: EngineLimits

    async def start(self) -> None:
        """Load models / open connection pools. Called once at start-up."""

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        """Transcribe one chunk; raise ``errors.EngineError`` on failure (the pipeline retries)."""

    @property
    def ready(self) -> bool:
        """True once the engine can take work."""

    def stats(self) -> dict[str, Any]:
        """Engine-specific figures for /v1/admin/stats."""

    async def close(self) -> None:
        """Release models and connections."""
