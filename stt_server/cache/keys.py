"""Content-addressed cache keys: pure functions, no I/O, no clock.

A key is the sha256 of a canonical JSON document holding the audio digest and
everything that changes the transcript (engine, model, language, prompt,
pipeline version). Two levels: the whole uploaded file, and each decoded chunk.
Engine and model ride along on the key so invalidation by engine/model works
without parsing anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from stt_server import PIPELINE_VERSION
from stt_server.engines.base import Engine
from stt_server.jobs.job import Job
from stt_server.audio.upload_format import wire_spec

Level = Literal["file", "chunk"]
LEVELS: tuple[Level, ...] = ("file", "chunk")

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CacheKey:
    """One cache key: ``digest`` is the sha256 hex over all the parts."""

    digest: str
    level: str
    engine: str
    model: str

    @property
    def value(self) -> str:
        """The string stored in every tier, e.g. ``"file:<sha256 hex>"``."""
        return f"{self.level}:{self.digest}"

    def __str__(self) -> str:
        return self.value


def sha256_hex(data: bytes) -> str:
    """The sha256 hex digest of some bytes (a convenience for callers)."""
    return hashlib.sha256(data).hexdigest()


def _norm(text: str | None) -> str | None:
    # An empty language or prompt means "none": both must share one key.
    return text if text else None


def make_key(
    level: str,
    content_sha256: str,
    *,
    engine: str,
    model: str,
    language: str | None,
    prompt: str | None,
    version: str,
) -> CacheKey:
    """Build a key at ``level`` from a content digest and the transcription parameters."""
    if level not in LEVELS:
        raise ValueError(f"unknown cache key level: {level!r}")
    digest_in = content_sha256.lower()
    if not _HEX64.fullmatch(digest_in):
        raise ValueError("content digest must be a sha256 hex string")
    if not engine or not model:
        raise ValueError("engine and model are required")
    parts = {
        "level": level,
        "sha256": digest_in,
        "engine": engine,
        "model": model,
        "language": _norm(language),
        "prompt": _norm(prompt),
        "version": version,
    }
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return CacheKey(
        digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        level=level,
        engine=engine,
        model=model,
    )


def file_key(audio_sha256: str, **parts: Any) -> CacheKey:
    """The key for a whole uploaded file (sha256 of its bytes as uploaded); ``parts`` as :func:`make_key`."""
    return make_key("file", audio_sha256, **parts)


def chunk_key(pcm_sha256: str, **parts: Any) -> CacheKey:
    """The key for one chunk (sha256 of its decoded PCM samples); ``parts`` as :func:`make_key`."""
    return make_key("chunk", pcm_sha256, **parts)


# ---- a job's keys: what its engine, model and options make of its audio


def _job_version(job: Job, engine: Engine) -> str:
    """The pipeline version plus the decoding options and the task that change a result, and the
    format the engine uploads chunks in (a lossy format may change a word; the embedded engine has none)."""
    options = f"t{job.temperature:g}" + ("+words" if job.word_timestamps else "") + (
        f"+{job.task}" if job.task != "transcribe" else "")
    wire = wire_spec(tuple(t.upload for t in getattr(engine, "targets", ())))
    return f"{PIPELINE_VERSION}/{options}" + (f"/{wire}" if wire else "")


def job_file_key(job: Job, engine: Engine) -> CacheKey:
    """The whole file's key for this job on this engine."""
    return file_key(job.sha256, engine=engine.name, model=engine.model, language=job.language,
                    prompt=job.prompt, version=_job_version(job, engine))


def job_chunk_key(job: Job, engine: Engine, pcm_sha256: str) -> CacheKey:
    """One chunk's key (``pcm_sha256``: of its decoded samples) for this job on this engine."""
    return chunk_key(pcm_sha256, engine=engine.name, model=engine.model, language=job.language,
                     prompt=job.prompt, version=_job_version(job, engine))


def job_cache_keys(job: Job, engines: Mapping[str, Engine], chunk_keys: list[str]) -> list[str]:
    """Every cache entry a job wrote: its whole-file key, and its chunks' keys (as the store kept them)."""
    head = [job_file_key(job, engines[job.engine]).value] if job.engine in engines else []
    return head + list(chunk_keys)
