"""The benchmark's audio, built from ../shared/corpus and cached in a temporary directory.

Long files come from :func:`tests.corpus.build_long_audio` (which skips the work when its
sidecar says the file is current). Distinct short files for the cache and concurrency
workloads are corpus speech with a small per-file gain, so every file, and every chunk of
it, hashes differently while it still sounds the same to the engine.
"""

from __future__ import annotations

import os
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.corpus import Placement, build_long_audio, speech_files

INPUTS = Path(os.environ.get("STT_BENCH_INPUTS") or Path(tempfile.gettempdir()) / "stt-bench-inputs")
GAIN_STEP = 0.004
"""Gain difference between two variants of one clip: changes every non-silent sample."""


@dataclass(frozen=True)
class LongFile:
    """A long input and where the corpus references sit in it."""

    path: Path
    minutes: float
    placements: list[Placement]

    @property
    def reference(self) -> str:
        return " ".join(text for text, _, _ in self.placements)


def long_file(minutes: float, fmt: str = "wav") -> LongFile:
    """``speech-<minutes>min.<fmt>`` (MP3 at 128 kbit/s: 110 minutes make about 100 MB)."""
    INPUTS.mkdir(parents=True, exist_ok=True)
    path = INPUTS / f"speech-{minutes:g}min.{fmt}"
    placed = build_long_audio(path, min_duration_s=minutes * 60, fmt=fmt, bitrate="128k" if fmt == "mp3" else "64k")
    return LongFile(path, minutes, placed)


def _read_pcm(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def write_variant(samples: np.ndarray, rate: int, variant: int, out: Path) -> Path:
    """``samples`` scaled by ``1 - variant * GAIN_STEP``, as a 16-bit mono WAV (written once)."""
    if out.exists():
        return out
    scaled = np.clip(np.round(samples.astype(np.float64) * (1.0 - variant * GAIN_STEP)), -32768, 32767)
    part = out.with_name(out.name + ".part")
    with wave.open(str(part), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(scaled.astype(np.int16).tobytes())
    os.replace(part, out)
    return out


def distinct_clips(count: int, tag: str) -> list[Path]:
    """``count`` different short files: each corpus WAV in turn, then each again at another gain, ...

    Written once into a folder named after ``tag`` (the workload) and reused.
    """
    folder = INPUTS / f"clips-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    sources = speech_files()
    out = []
    for n in range(count):
        source = sources[n % len(sources)]
        variant = 1 + n // len(sources)
        samples, rate = _read_pcm(source)
        out.append(write_variant(samples, rate, variant, folder / f"{source.stem}-g{variant}.wav"))
    return out


def distinct_long(count: int, seconds: float, tag: str) -> list[Path]:
    """``count`` different files of about ``seconds`` of joined corpus speech each."""
    base = INPUTS / f"speech-{seconds:g}s.wav"
    build_long_audio(base, min_duration_s=seconds)
    samples, rate = _read_pcm(base)
    folder = INPUTS / f"long-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    return [write_variant(samples, rate, 1 + n, folder / f"{base.stem}-g{1 + n}.wav") for n in range(count)]
