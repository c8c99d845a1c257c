"""Merging per-chunk transcripts into one timed transcript for the whole recording."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Sequence

from stt_server.audio.chunking import Chunk
from stt_server.audio.transcript import Segment, Transcript, Word

# How many trailing words of the previous chunk can reappear at the start of the
# next one: a boundary inside a word duplicates that word, at most a short phrase.
SEAM_WORDS = 4
# Engines' timestamps near a chunk edge are loose (Whisper's are 20 ms tokens and
# often snap to the edge), so "overlapping" at a seam means "within this gap".
SEAM_GAP_S = 0.5


def normalise_word(word: str) -> str:
    """A word reduced for comparison: lowercase, punctuation stripped."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def merge_transcripts(parts: Sequence[tuple[Chunk, Transcript]], duration_s: float,
                      language: str | None = None) -> Transcript:
    """One transcript from per-chunk transcripts whose times are relative to their chunk.

    Parts are taken in chunk-index order; every time is offset by its chunk's start and
    clamped into the chunk, segment starts never go backwards and ends never precede
    starts, empty segments are dropped, and words repeated across a seam (both sides
    transcribed a word the boundary cut) are kept once. The language is the one asked for, else
    the one the engine detected in most of the speech.
    """
    merged: list[Segment] = []
    for chunk, transcript in sorted(parts, key=lambda part: part[0].index):
        floor = merged[-1].start if merged else chunk.start
        placed = _place(chunk, transcript.segments, floor)
        merged.extend(_trim_seam(merged, placed))
    return Transcript(segments=tuple(merged), language=language or spoken_language(parts), duration=duration_s)


def spoken_language(parts: Sequence[tuple[Chunk, Transcript]], fallback: str = "en") -> str:
    """The language the engine gave most of the audio that has text; ``fallback`` when nothing was said."""
    seconds: dict[str, float] = {}
    for chunk, transcript in parts:
        if transcript.text.strip() and transcript.language:
            seconds[transcript.language] = seconds.get(transcript.language, 0.0) + chunk.duration
    return max(seconds, key=lambda lang: seconds[lang]) if seconds else fallback


def _place(chunk: Chunk, segments: Sequence[Segment], floor: float) -> list[Segment]:
    """Shift a chunk's segments to absolute time, clamped into the chunk and monotonic."""
    placed: list[Segment] = []
    for seg in segments:
        if not seg.text.strip():
            continue
        moved = seg.shifted(chunk.start)
        start = min(max(moved.start, chunk.start, floor), chunk.end)
        end = min(max(moved.end, start), chunk.end)
        placed.append(replace(moved, start=start, end=end, words=_clamp_words(moved.words, start, end)))
        floor = start
    return placed


def _clamp_words(words: Sequence[Word], start: float, end: float) -> tuple[Word, ...]:
    """Words held inside their segment's ``[start, end]``, starts non-decreasing."""
    clamped: list[Word] = []
    floor = start
    for w in words:
        w_start = min(max(w.start, floor), end)
        clamped.append(replace(w, start=w_start, end=min(max(w.end, w_start), end)))
        floor = w_start
    return tuple(clamped)


def _trim_seam(merged: Sequence[Segment], placed: list[Segment]) -> list[Segment]:
    """``placed`` without leading words that repeat, at the same moment, the end of ``merged``."""
    if not merged or not placed:
        return placed
    if _first_time(placed[0]) - _last_time(merged[-1]) > SEAM_GAP_S:
        return placed  # a repeat after a real pause is speech ("the ... the"), keep it
    tail = _norm_words(reversed(merged), from_end=True)
    head = _norm_words(placed, from_end=False)
    repeated = _overlap(tail, head)
    return _drop_leading_words(placed, repeated) if repeated else placed


def _first_time(seg: Segment) -> float:
    return seg.words[0].start if seg.words else seg.start


def _last_time(seg: Segment) -> float:
    return seg.words[-1].end if seg.words else seg.end


def _norm_words(segments: Iterable[Segment], *, from_end: bool) -> list[str]:
    """Up to SEAM_WORDS normalised non-empty words from the start (or end) of ``segments``."""
    found: list[str] = []
    for seg in segments:
        words = [n for n in (normalise_word(t) for t in seg.text.split()) if n]
        found = words + found if from_end else found + words
        if len(found) >= SEAM_WORDS:
            break
    return found[-SEAM_WORDS:] if from_end else found[:SEAM_WORDS]


def _overlap(tail: list[str], head: list[str]) -> int:
    """The largest ``k`` with ``tail[-k:] == head[:k]`` (0 if none)."""
    for k in range(min(len(tail), len(head)), 0, -1):
        if tail[-k:] == head[:k]:
            return k
    return 0


def _drop_leading_words(segments: list[Segment], count: int) -> list[Segment]:
    """``segments`` without their first ``count`` real (non-punctuation) words."""
    kept: list[Segment] = []
    for seg in segments:
        if count > 0:
            trimmed, count = _drop_from_segment(seg, count)
            if trimmed is None:
                continue
            seg = trimmed
        kept.append(seg)
    return kept


def _drop_from_segment(seg: Segment, count: int) -> tuple[Segment | None, int]:
    """The segment without up to ``count`` leading words, and how many are still to drop."""
    tokens = seg.text.split()
    cut, left = _cut_index(tokens, count)
    if cut == len(tokens):
        return None, left
    words = seg.words[_cut_index([w.word for w in seg.words], count)[0]:]
    start = min(max(words[0].start, seg.start), seg.end) if words else seg.start
    # Token ids no longer match the shortened text, so they are not kept.
    return replace(seg, start=start, text=" " + " ".join(tokens[cut:]), tokens=(), words=words), left


def _cut_index(tokens: Sequence[str], count: int) -> tuple[int, int]:
    """Index just past the first ``count`` non-punctuation tokens, and the shortfall."""
    i = 0
    while i < len(tokens) and count > 0:
        if normalise_word(tokens[i]):
            count -= 1
        i += 1
    return i, count
