"""The speech corpus for tests and benchmarks: references, scoring, long inputs.

The corpus lives in ../shared/corpus (override with STT_CORPUS_DIR): short
real recordings with reference transcripts. `build_long_audio` strings them
together into files of any length — a 10-minute WAV, a 100 MB MP3 — and says
where each reference sits, so a whole long transcript can be scored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import BinaryIO

import jiwer

from stt_server.audio.media import ffmpeg_exe

CORPUS_DIR = Path(os.environ.get("STT_CORPUS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "corpus")


def require_corpus() -> Path:
    """The corpus directory; a loud error (never a skip) when it is missing. Tests that need no
    speech never call this, so they collect and run without it."""
    if not (CORPUS_DIR / "transcripts.json").exists():
        raise RuntimeError(f"the speech corpus is missing: expected {CORPUS_DIR} (../shared/corpus beside the "
                           "checkout), or set STT_CORPUS_DIR")
    return CORPUS_DIR

RATE = 16_000
BUILD_VERSION = 1
"""Bump when the bytes `build_long_audio` writes change, to invalidate cached outputs."""

Placement = tuple[str, float, float]


@functools.cache
def _catalogue() -> dict[str, dict]:
    return json.loads((require_corpus() / "transcripts.json").read_text(encoding="utf-8"))


def references() -> dict[str, str]:
    """File name → reference transcript, for every corpus file (WAV and MP3)."""
    return {name: entry["text"] for name, entry in _catalogue().items()}


def speech_files() -> list[Path]:
    """The corpus WAVs that have references, sorted by name (MP3 duplicates left out)."""
    return [CORPUS_DIR / name for name in sorted(references()) if name.endswith(".wav")]


# --------------------------------------------------------------------------- scoring

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}
# Whisper writes British spellings now and then; the references are American.
_SPELLINGS = {"centre": "center", "metres": "meters", "metre": "meter", "colour": "color"}


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return _number_words(head) + " " + name + ("" if rest == 0 else " " + _number_words(rest))
    raise AssertionError(n)


def normalise(text: str) -> str:
    """Lower case, no punctuation, numbers spelled out, a few spellings unified.

    The references spell numbers as words ("ten of clubs", "five five") and
    write "mister"; Whisper writes "10", "5, 5" and "Mr.". Both sides go
    through this before scoring.
    """
    text = text.lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 → 1000
    text = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", text)
    text = re.sub(r"[^\w\s']|_", " ", text)  # hyphens and punctuation become spaces
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, but not apostrophes in words
    words = [_ABBREVIATIONS.get(w, w) for w in text.split()]
    return " ".join(_SPELLINGS.get(w, w) for w in words)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference`, both normalised."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


# --------------------------------------------------------------------------- long audio


@functools.cache
def _pcm_16k(path: Path) -> bytes:
    """A (short) corpus file decoded to 16 kHz mono s16le."""
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
            "-vn", "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"]
    return subprocess.run(args, check=True, capture_output=True, timeout=60).stdout


def _plan(min_duration_s: float, gap_s: float) -> list[tuple[Path, int]]:
    """Which corpus file goes where (start in samples), until min_duration_s is reached."""
    files, refs = speech_files(), references()
    assert files and all(p.name in refs for p in files)
    gap = round(gap_s * RATE)
    plan: list[tuple[Path, int]] = []
    cursor = 0
    while cursor < min_duration_s * RATE:
        for path in files:
            if plan:
                cursor += gap
            plan.append((path, cursor))
            cursor += len(_pcm_16k(path)) // 2
            if cursor >= min_duration_s * RATE:
                break
    return plan


def _cache_key(min_duration_s: float, gap_s: float, fmt: str, bitrate: str) -> str:
    sources = [(p.name, p.stat().st_size) for p in speech_files()]
    blob = json.dumps([BUILD_VERSION, min_duration_s, gap_s, fmt, bitrate, sources])
    return hashlib.sha256(blob.encode()).hexdigest()


def build_long_audio(out: Path, min_duration_s: float, gap_s: float = 1.5, fmt: str = "wav",
                     bitrate: str = "64k") -> list[Placement]:
    """Write corpus speech, `gap_s` of silence apart, repeated to at least `min_duration_s`.

    Output is 16 kHz mono: PCM WAV, or MP3 at `bitrate` (a 100 MB MP3 is
    about 110 minutes at "128k"). Written in blocks — the whole output is
    never in memory — and deterministic. A sidecar `<out>.json` records the
    parameters; a later call with the same ones returns without rebuilding.
    Returns (reference_text, start_s, end_s) for each placed recording, in order.
    """
    if fmt not in ("wav", "mp3"):
        raise ValueError(f"unsupported format {fmt!r}")
    out = Path(out)
    sidecar = out.with_name(out.name + ".json")
    key = _cache_key(min_duration_s, gap_s, fmt, bitrate)
    if out.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if meta.get("key") == key:
            return [tuple(p) for p in meta["placements"]]  # type: ignore[misc]
    plan = _plan(min_duration_s, gap_s)
    refs = references()
    placements = [(refs[p.name], start / RATE, (start + len(_pcm_16k(p)) // 2) / RATE) for p, start in plan]
    part = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "wav":
        with wave.open(str(part), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            _write_pcm(w.writeframes, plan)
    else:
        _encode_mp3(part, plan, bitrate)
    os.replace(part, out)
    sidecar.write_text(json.dumps({"key": key, "placements": placements}))
    return placements


def _write_pcm(write, plan: list[tuple[Path, int]]) -> None:  # type: ignore[no-untyped-def]
    """Feed the planned PCM, silence included, to `write` one recording at a time."""
    cursor = 0
    for path, start in plan:
        if start > cursor:
            write(b"\0\0" * (start - cursor))
        pcm = _pcm_16k(path)
        write(pcm)
        cursor = start + len(pcm) // 2


def _encode_mp3(part: Path, plan: list[tuple[Path, int]], bitrate: str) -> None:
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0",
            "-c:a", "libmp3lame", "-b:a", bitrate, "-map_metadata", "-1",
            "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "mp3", str(part)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        stdin: BinaryIO = proc.stdin  # type: ignore[assignment]
        try:
            _write_pcm(stdin.write, plan)
        finally:
            stdin.close()
        if proc.wait(timeout=600) != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg failed: {err.read().decode(errors='replace')}")
