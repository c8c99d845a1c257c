"""A job's language, detected once on its first 30 s before its chunks are transcribed.

Whisper detects the language from one 30 s window; on the short chunks a job is cut into, the
guess is poor (a Portuguese clip split in two reads as Czech and Japanese), and chunks of one
recording could disagree. So a job that names no language, on an engine that can detect one,
is given the language found at its start, and every chunk is transcribed in it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import structlog

from stt_server.engines.dispatch import Runner
from stt_server.jobs.job import Job
from stt_server.audio.languages import english_only
from stt_server.audio.media import extract_pcm

log = structlog.get_logger(__name__)

DETECT_SECONDS = 30.0  # Whisper's window


@runtime_checkable
class LanguageDetector(Protocol):
    """An engine that can tell the language of some audio (the embedded one)."""

    model: str

    async def detect_language(self, samples: np.ndarray) -> str | None:
        """The ISO 639-1 code of the language spoken in ``samples`` (16 kHz mono float32), or None
        when the loaded model cannot tell (an English-only one)."""


async def with_detected_language(job: Job, engine: object, path: Path, timeout_s: float,
                                 runner: Runner) -> Job:
    """``job`` with the language of its first 30 s when it names none and ``engine`` can detect it
    (the model call takes one of the engine's slots from its dispatch ``runner``, like a chunk)."""
    if job.language or not isinstance(engine, LanguageDetector) or english_only(engine.model):
        return job
    try:
        samples = await asyncio.to_thread(extract_pcm, path, 0.0, min(DETECT_SECONDS, job.duration_s), timeout_s)
        language = await runner.within_limits(lambda: engine.detect_language(samples))
    except Exception as exc:  # noqa: BLE001 - without it each chunk detects its own, as before
        log.warning("language_detection_failed", error=str(exc))
        return job
    if language is None:
        return job
    log.info("language_detected", language=language)
    return job.evolve(language=language)
