"""Chunk planning: where to cut a long recording so each piece fits the engine and no word is cut.

Pure functions over an energy envelope (RMS level in dBFS per fixed-length frame);
the pipeline computes the envelope while probing and extracts each planned chunk
only when a worker needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

# A final piece shorter than this carries too little audio for the engine to be
# worth a call of its own (and Whisper hallucinates on near-empty input).
MIN_TAIL_S = 1.0
# Float slack when comparing times derived from frame arithmetic.
_EPS = 1e-9
# Frames past the end of the envelope are unknown; treating them as loud means
# we never snap to, or skip, audio we have not measured.
_LOUD_DB = -0.0


class Levels(Protocol):
    """Frame levels in dBFS, indexable: a list of floats, or a numpy array as the pipeline has."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


@dataclass(frozen=True)
class ChunkPolicy:
    """How long chunks may be and what counts as silence."""

    max_chunk_s: float = 30.0
    min_chunk_s: float = 10.0
    silence_search_s: float = 6.0
    silence_db: float = -40.0


@dataclass(frozen=True)
class Chunk:
    """One planned piece of the recording, ``[start, end)`` in seconds."""

    index: int
    start: float
    end: float
    silent: bool = False

    @property
    def duration(self) -> float:
        """Length of the chunk in seconds."""
        return self.end - self.start


def choose_chunk_length(duration_s: float, max_chunk_s: float, parallelism: int, min_chunk_s: float) -> float:
    """The nominal chunk length for a file of ``duration_s`` seconds.

    Never above ``max_chunk_s`` (the engine's limit wins over everything); for short
    files ``duration_s / parallelism`` so every worker gets a piece, but not below
    ``min_chunk_s`` because tiny chunks cost more in per-call overhead and context
    than they gain in parallelism.
    """
    if max_chunk_s <= 0:
        raise ValueError("max_chunk_s must be positive")
    per_worker = max(duration_s, 0.0) / max(parallelism, 1)
    return min(max_chunk_s, max(min_chunk_s, per_worker))


def max_seconds_for_bytes(max_upload_bytes: int, bytes_per_second: float, header_bytes: int = 44) -> float:
    """Seconds of audio that fit in an upload of ``max_upload_bytes`` (default header: a WAV's 44 bytes)."""
    if bytes_per_second <= 0:
        raise ValueError("bytes_per_second must be positive")
    return max(max_upload_bytes - header_bytes, 0) / bytes_per_second


def plan_chunks(
    envelope: Levels,
    frame_s: float,
    duration_s: float,
    policy: ChunkPolicy,
    parallelism: int = 1,
) -> list[Chunk]:
    """Cut ``[0, duration_s]`` into chunks that tile it exactly, with boundaries snapped to silence.

    ``envelope[i]`` is the level in dBFS of frame ``i``, covering ``[i*frame_s, (i+1)*frame_s)``.
    No chunk is longer than the nominal length (see :func:`choose_chunk_length`), except
    that a final tail under :data:`MIN_TAIL_S` is folded into its predecessor when that
    stays within ``policy.max_chunk_s``. Returns ``[]`` for an empty recording.
    """
    if frame_s <= 0:
        raise ValueError("frame_s must be positive")
    if duration_s <= 0:
        return []
    length = choose_chunk_length(duration_s, policy.max_chunk_s, parallelism, policy.min_chunk_s)
    bounds = [0.0]
    while duration_s - bounds[-1] > length + _EPS:
        bounds.append(_find_cut(envelope, frame_s, bounds[-1], length, policy))
    bounds.append(duration_s)
    _merge_short_tail(bounds, policy.max_chunk_s)
    return [
        Chunk(i, start, end, _is_silent(envelope, frame_s, start, end, policy.silence_db))
        for i, (start, end) in enumerate(zip(bounds, bounds[1:]))
    ]


def settled_chunks(
    envelope: Levels,
    frame_s: float,
    duration_s: float,
    policy: ChunkPolicy,
    parallelism: int = 1,
    after: Chunk | None = None,
) -> list[Chunk]:
    """The leading chunks of :func:`plan_chunks` that a partial ``envelope`` already decides
    (those following ``after``, a chunk settled earlier, when it is given).

    ``envelope`` covers the recording's start only (as it is being decoded). Each cut depends on
    the frames up to one chunk length past the previous cut, so a cut whose window is wholly
    measured is final; the last cut is left to the full plan, since a short tail may fold it away.
    The result is always a prefix of ``plan_chunks`` over the whole envelope.
    """
    if frame_s <= 0 or duration_s <= 0:
        return []
    known_s = len(envelope) * frame_s
    length = choose_chunk_length(duration_s, policy.max_chunk_s, parallelism, policy.min_chunk_s)
    bounds = [after.end if after else 0.0]
    first = after.index + 1 if after else 0
    # The window of a cut reaches one frame past ``start + length`` (the frames touching it).
    while duration_s - bounds[-1] > length + _EPS and bounds[-1] + length + frame_s <= known_s + _EPS:
        cut = _find_cut(envelope, frame_s, bounds[-1], length, policy)
        if duration_s - cut <= length + _EPS:
            break  # possibly the final cut: the full plan decides it
        bounds.append(cut)
    return [
        Chunk(i, start, end, _is_silent(envelope, frame_s, start, end, policy.silence_db))
        for i, (start, end) in enumerate(zip(bounds, bounds[1:]), start=first)
    ]


def _level(envelope: Levels, i: int) -> float:
    return envelope[i] if 0 <= i < len(envelope) else _LOUD_DB


def _find_cut(envelope: Levels, frame_s: float, start: float, length: float, policy: ChunkPolicy) -> float:
    """The quietest point in the last ``silence_search_s`` before ``start + length``."""
    hi = start + length
    # Never search the first half of the chunk: that bounds the chunk count at
    # twice the nominal one even when the search window is as long as a chunk.
    lo = max(start, hi - min(policy.silence_search_s, length / 2))
    first = math.ceil(lo / frame_s - _EPS)
    last = math.floor(hi / frame_s + _EPS)  # frames first..last-1 lie wholly inside [lo, hi]
    run = _longest_silent_run(envelope, first, last, policy.silence_db)
    if run is not None:
        return (run[0] + run[1]) / 2 * frame_s
    return _quietest_point(envelope, frame_s, first, last, hi)


def _longest_silent_run(envelope: Levels, first: int, last: int, silence_db: float) -> tuple[int, int] | None:
    """``(begin, end)`` frame indices (end exclusive) of the longest silent run; ties go to the latest."""
    best: tuple[int, int] | None = None
    begin: int | None = None
    for i in range(first, last + 1):
        silent = i < last and _level(envelope, i) < silence_db
        if silent and begin is None:
            begin = i
        elif not silent and begin is not None:
            if best is None or i - begin >= best[1] - best[0]:
                best = (begin, i)
            begin = None
    return best


def _quietest_point(envelope: Levels, frame_s: float, first: int, last: int, hi: float) -> float:
    """The centre of the quietest frame in the window, or ``hi`` itself; ties go to the latest."""
    # ``hi`` competes as the level of the frames it touches, and the latest point
    # wins ties, so continuous speech is cut at exactly the nominal length.
    touching = (math.ceil(hi / frame_s - _EPS) - 1, math.floor(hi / frame_s + _EPS))
    candidates = [(_level(envelope, i), (i + 0.5) * frame_s) for i in range(first, last)]
    candidates.append((max(_level(envelope, i) for i in touching), hi))
    _, cut = min(candidates, key=lambda c: (c[0], -c[1]))
    return min(cut, hi)


def _merge_short_tail(bounds: list[float], max_chunk_s: float) -> None:
    """Fold a final chunk under MIN_TAIL_S into its predecessor if the result fits ``max_chunk_s``."""
    if len(bounds) < 3:
        return
    tail = bounds[-1] - bounds[-2]
    if tail < MIN_TAIL_S and bounds[-1] - bounds[-3] <= max_chunk_s + _EPS:
        del bounds[-2]


def _is_silent(envelope: Levels, frame_s: float, start: float, end: float, silence_db: float) -> bool:
    """True when every frame overlapping ``[start, end)`` is below ``silence_db``."""
    first = math.floor(start / frame_s + _EPS)
    last = math.ceil(end / frame_s - _EPS)
    return all(_level(envelope, i) < silence_db for i in range(first, max(last, first + 1)))
