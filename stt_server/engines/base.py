"""The engine contract: every engine takes one chunk of 16 kHz mono audio and returns a Transcript."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stt_server.engines.backoff import RetryPolicy
from stt_server.audio.transcript import Transcript
from stt_server.audio.upload_format import WAV_BYTES_PER_SECOND, UploadFormat


@dataclass(frozen=True)
class EngineLimits:
    """What the chunk planner must respect for this engine."""

    max_chunk_s: float = 30.0
    max_upload_bytes: int | None = None
    concurrency: int = 2
    # How many pieces a short file is worth cutting into so they run side by side (None: concurrency).
    # 1 for an engine whose unit of work is a whole 30 s window: shorter chunks only add windows.
    split_short_files_into: int | None = None
    upload_bytes_per_s: float = WAV_BYTES_PER_SECOND  # worst case of the upload format: caps chunk length

    @property
    def parallel_pieces(self) -> int:
        """What the planner splits a short file for."""
        return self.split_short_files_into or self.concurrency


@dataclass(frozen=True)
class Upload:
    """One chunk encoded for the wire, once: the bytes a remote engine sends."""

    format: UploadFormat
    data: bytes


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
    target: str | None = None  # which of the engine's targets to send it to (None: its only one)
    uploads: tuple[Upload, ...] = ()  # the chunk encoded in its targets' formats, by the decode hop
    upload: Upload | None = None  # the one to send to ``target`` (the runner picks it per attempt)


@dataclass(frozen=True)
class Target:
    """One place an engine sends work (an upstream, or the engine itself) and the rules for it.

    The dispatch runner enforces them: at most ``concurrency`` requests at once, ``retry`` for
    failed chunks, and, when ``circuit_threshold`` is set, a circuit breaker that opens after that
    many failures in a row and lets a probe through ``circuit_cooldown_s`` later.
    """

    name: str
    concurrency: int
    retry: RetryPolicy | None = None  # None: the pipeline's chunk retries
    circuit_threshold: int | None = None
    circuit_cooldown_s: float = 30.0
    upload: UploadFormat | None = None  # the wire format it takes first (None: raw samples, in-process)


@runtime_checkable
class Engine(Protocol):
    """A transcription engine: it only does I/O. ``name`` and ``model`` go into cache keys.

    An engine makes one attempt per call and raises ``errors.EngineError`` saying what kind of
    failure it met; how much work it gets, retries and circuits are the dispatch runner's. An
    engine with several upstreams lists them as ``targets`` and sends to ``request.target``; one that
    uploads encoded audio sends ``request.upload`` (the runner encodes it in the target's format).
    """

    name: str
    model: str
    limits: EngineLimits
    targets: tuple[Target, ...]

    async def start(self) -> None:
        """Load models / open connection pools. Called once at start-up."""

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        """Transcribe one chunk, once; raise ``errors.EngineError`` on failure."""

    @property
    def ready(self) -> bool:
        """True once the engine can take work."""

    def stats(self) -> dict[str, Any]:
        """Engine-specific figures for /v1/admin/stats."""

    async def close(self) -> None:
        """Release models and connections."""
