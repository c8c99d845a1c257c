"""Table tests for chunk planning over synthetic energy envelopes."""

from __future__ import annotations

import math
import random
from typing import Sequence

import pytest

from stt_server.audio.chunking import (Chunk, ChunkPolicy, choose_chunk_length, max_seconds_for_bytes, plan_chunks,
                                 settled_chunks)

FRAME = 0.1
LOUD = -20.0
QUIET = -60.0
POLICY = ChunkPolicy()


def envelope(duration_s: float, gaps: Sequence[tuple[float, float]] = ()) -> list[float]:
    """Loud speech for ``duration_s`` with silent gaps at the given ``(start, end)`` seconds."""
    levels = [LOUD] * round(duration_s / FRAME)
    for start, end in gaps:
        for i in range(round(start / FRAME), min(round(end / FRAME), len(levels))):
            levels[i] = QUIET
    return levels


def levels_of(levels: Sequence[float], frame_s: float, chunk: Chunk) -> list[float]:
    """The levels of the frames overlapping ``chunk``, missing frames counted loud."""
    first = math.floor(chunk.start / frame_s + 1e-9)
    last = max(math.ceil(chunk.end / frame_s - 1e-9), first + 1)
    return [levels[i] if i < len(levels) else 0.0 for i in range(first, last)]


def assert_tiles(chunks: list[Chunk], duration_s: float) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0.0
    assert chunks[-1].end == duration_s
    for before, after in zip(chunks, chunks[1:]):
        assert before.end == after.start
    assert all(c.duration > 0 for c in chunks)


def spans(chunks: list[Chunk]) -> list[tuple[float, float]]:
    return [(round(c.start, 6), round(c.end, 6)) for c in chunks]


@pytest.mark.parametrize(
    ("duration", "max_s", "parallelism", "min_s", "expected"),
    [
        (600.0, 30.0, 1, 10.0, 30.0),  # long file: engine limit
        (600.0, 30.0, 8, 10.0, 30.0),  # many workers still capped by the engine
        (60.0, 30.0, 4, 10.0, 15.0),  # short file: one piece per worker
        (60.0, 30.0, 2, 10.0, 30.0),
        (20.0, 30.0, 4, 10.0, 10.0),  # never below the minimum
        (5.0, 30.0, 1, 10.0, 10.0),
        (600.0, 8.0, 1, 10.0, 8.0),  # a tight engine limit beats the minimum
        (0.0, 30.0, 2, 10.0, 10.0),
        (90.0, 30.0, 0, 10.0, 30.0),  # parallelism < 1 counts as 1
    ],
)
def test_choose_chunk_length(duration: float, max_s: float, parallelism: int, min_s: float, expected: float) -> None:
    assert choose_chunk_length(duration, max_s, parallelism, min_s) == pytest.approx(expected)


def test_choose_chunk_length_rejects_non_positive_max() -> None:
    with pytest.raises(ValueError):
        choose_chunk_length(60.0, 0.0, 1, 10.0)


@pytest.mark.parametrize(
    ("limit", "rate", "header", "expected"),
    [
        (25 * 1024 * 1024, 32_000, 44, (25 * 1024 * 1024 - 44) / 32_000),  # 16 kHz mono s16 WAV: ~819 s
        (1_000_044, 1_000, 44, 1000.0),
        (2_000, 16_000, 0, 0.125),
        (10, 32_000, 44, 0.0),  # limit below the header
    ],
)
def test_max_seconds_for_bytes(limit: int, rate: float, header: int, expected: float) -> None:
    assert max_seconds_for_bytes(limit, rate, header) == pytest.approx(expected)


def test_max_seconds_for_bytes_rejects_zero_rate() -> None:
    with pytest.raises(ValueError):
        max_seconds_for_bytes(1000, 0)


@pytest.mark.parametrize(
    ("duration", "gaps", "expected_cuts"),
    [
        # gaps inside the search window [24, 30]: cut in the middle of the gap
        (70.0, [(26.0, 27.0), (52.0, 53.0)], [26.5, 52.5]),
        # two gaps in the window: the longer one wins
        (45.0, [(24.5, 25.0), (27.0, 28.5)], [27.75]),
        # two equally long gaps: the later one
        (45.0, [(25.0, 25.4), (28.0, 28.4)], [28.2]),
        # a gap before the window is ignored: continuous speech is cut at max
        (45.0, [(10.0, 12.0)], [30.0]),
        # a gap straddling the window end: middle of the part inside the window
        (45.0, [(29.0, 31.0)], [29.5]),
        # no gaps at all: exactly max every time
        (95.0, [], [30.0, 60.0, 90.0]),
    ],
)
def test_boundaries_land_in_gaps(duration: float, gaps: list[tuple[float, float]], expected_cuts: list[float]) -> None:
    chunks = plan_chunks(envelope(duration, gaps), FRAME, duration, POLICY)
    assert_tiles(chunks, duration)
    assert [c.end for c in chunks[:-1]] == pytest.approx(expected_cuts)
    assert all(c.duration <= POLICY.max_chunk_s + 1e-9 for c in chunks)


@pytest.mark.parametrize(
    ("dips", "expected_cut"),
    [
        ({270: -35.0}, 27.05),  # one quieter frame (not silence): cut in its middle
        ({250: -35.0, 280: -38.0}, 28.05),  # the quietest of two dips
        ({250: -35.0, 280: -35.0}, 28.05),  # equal dips: the later one
        ({100: -70.0}, 30.0),  # a dip before the search window is not considered
    ],
)
def test_quietest_frame_when_no_silence(dips: dict[int, float], expected_cut: float) -> None:
    levels = envelope(45.0)
    for i, level in dips.items():
        levels[i] = level
    chunks = plan_chunks(levels, FRAME, 45.0, POLICY)
    assert chunks[0].end == pytest.approx(expected_cut)
    assert_tiles(chunks, 45.0)


@pytest.mark.parametrize(
    ("duration", "parallelism", "count"),
    [
        (600.0, 1, 20),  # 10 min of continuous speech at 30 s
        (600.0, 4, 20),
        (60.0, 4, 4),  # short file spread over the workers
        (25.0, 1, 1),  # shorter than one chunk
        (30.0, 1, 1),  # exactly one chunk
        (0.5, 1, 1),
    ],
)
def test_chunk_counts(duration: float, parallelism: int, count: int) -> None:
    chunks = plan_chunks(envelope(duration), FRAME, duration, POLICY, parallelism)
    assert len(chunks) == count
    assert_tiles(chunks, duration)


def test_ten_minutes_with_pauses_gives_twenty_or_more() -> None:
    gaps = [(t, t + 0.4) for t in range(7, 600, 5)]
    chunks = plan_chunks(envelope(600.0, gaps), FRAME, 600.0, POLICY)
    assert len(chunks) >= 20
    assert_tiles(chunks, 600.0)
    for c in chunks[:-1]:  # every cut inside a pause
        assert any(start < c.end < start + 0.4 for start in range(7, 600, 5))


@pytest.mark.parametrize(
    ("levels", "duration", "expected"),
    [
        ([], 0.0, []),
        ([], -1.0, []),
        ([], 12.0, [(0.0, 12.0, False)]),  # no envelope: one loud chunk
        ([], 45.0, [(0.0, 30.0, False), (30.0, 45.0, False)]),  # missing frames are loud: cut at max
        # the envelope stops before the gap would show: treated as loud, cut at max
        (envelope(20.0), 45.0, [(0.0, 30.0, False), (30.0, 45.0, False)]),
        # all silence: the longest silent run in [24, 30] is all of it
        ([QUIET] * 450, 45.0, [(0.0, 27.0, True), (27.0, 45.0, True)]),
        ([QUIET] * 100, 25.0, [(0.0, 25.0, False)]),  # envelope ends before the audio: not silent
        ([QUIET] * 250, 25.0, [(0.0, 25.0, True)]),
    ],
)
def test_edge_cases(levels: list[float], duration: float, expected: list[tuple[float, float, bool]]) -> None:
    chunks = plan_chunks(levels, FRAME, duration, POLICY)
    assert [(round(c.start, 6), round(c.end, 6), c.silent) for c in chunks] == expected


def test_rejects_non_positive_frame() -> None:
    with pytest.raises(ValueError):
        plan_chunks([], 0.0, 10.0, POLICY)


def test_silent_stretch_marked() -> None:
    # speech, then 40 s of silence, then speech: the middle stretch is skippable
    chunks = plan_chunks(envelope(100.0, [(30.0, 70.0)]), FRAME, 100.0, POLICY)
    assert_tiles(chunks, 100.0)
    silent = [c for c in chunks if c.silent]
    assert silent
    assert all(30.0 - 1e-9 <= c.start and c.end <= 70.0 + 1e-9 for c in silent)
    assert not chunks[0].silent and not chunks[-1].silent


@pytest.mark.parametrize(
    ("duration", "gaps", "parallelism", "expected"),
    [
        # a 0.5 s tail after a full 30 s chunk would make 30.5 s: kept on its own
        (30.5, [], 1, [(0.0, 30.0), (30.0, 30.5)]),
        (60.4, [], 1, [(0.0, 30.0), (30.0, 60.0), (60.0, 60.4)]),
        # nominal 15.5 s (2 workers); a gap cuts the first chunk early at 15.0, which
        # leaves a 0.5 s tail after 30.5: folded in, giving 16 s, still under max
        (31.0, [(14.9, 15.1)], 2, [(0.0, 15.0), (15.0, 31.0)]),
        # a tail of a full second is long enough to keep
        (31.0, [], 1, [(0.0, 30.0), (30.0, 31.0)]),
    ],
)
def test_short_tail(duration: float, gaps: list[tuple[float, float]], parallelism: int,
                    expected: list[tuple[float, float]]) -> None:
    chunks = plan_chunks(envelope(duration, gaps), FRAME, duration, POLICY, parallelism)
    assert spans(chunks) == expected
    assert_tiles(chunks, duration)


@pytest.mark.parametrize("seed", range(300))
def test_invariants_on_random_envelopes(seed: int) -> None:
    rng = random.Random(seed)
    frame_s = rng.choice([0.01, 0.02, 0.05, 0.1, 0.25])
    duration = rng.choice([0.3, 5.0, 29.9, 30.0, 61.7]) if seed % 5 == 0 else rng.uniform(0.05, 400.0)
    levels = [rng.choice([QUIET, LOUD, rng.uniform(-80.0, 0.0)])
              for _ in range(int(duration / frame_s * rng.uniform(0.0, 1.2)))]
    parallelism = rng.randint(1, 8)
    policy = ChunkPolicy(
        max_chunk_s=rng.choice([5.0, 15.0, 30.0]),
        min_chunk_s=rng.choice([1.0, 10.0]),
        silence_search_s=rng.choice([1.0, 6.0, 20.0]),
    )
    chunks = plan_chunks(levels, frame_s, duration, policy, parallelism)
    assert_tiles(chunks, duration)
    assert all(c.duration <= policy.max_chunk_s + 1e-9 for c in chunks)
    # every cut lands in the second half of its chunk's nominal length
    length = choose_chunk_length(duration, policy.max_chunk_s, parallelism, policy.min_chunk_s)
    assert len(chunks) <= 2 * duration / length + 1
    assert all(c.silent == all(v < policy.silence_db for v in levels_of(levels, frame_s, c)) for c in chunks)


# ---------------------------------------------------------------- settled prefix of a partial envelope


@pytest.mark.parametrize("seed", range(200))
def test_settled_chunks_are_a_prefix_of_the_full_plan(seed: int) -> None:
    rng = random.Random(seed)
    frame_s = 0.05
    frames = rng.randint(0, 6000)
    envelope = []
    while len(envelope) < frames:  # speech and pauses of random lengths
        level = rng.choice([-80.0, -60.0, -20.0, -10.0])
        envelope += [level + rng.uniform(-3, 3)] * rng.randint(1, 200)
    envelope = envelope[:frames]
    duration = frames * frame_s + rng.uniform(0, frame_s)
    policy = ChunkPolicy(max_chunk_s=rng.choice([10.0, 30.0]), min_chunk_s=5.0,
                         silence_search_s=rng.choice([2.0, 6.0]))
    parallelism = rng.choice([1, 2, 8])
    full = plan_chunks(envelope, frame_s, duration, policy, parallelism)
    released: list[Chunk] = []
    for cut in sorted({0, frames // 7, frames // 3, frames // 2, frames - 1, frames}):
        prefix = settled_chunks(envelope[:cut], frame_s, duration, policy, parallelism)
        assert prefix == full[: len(prefix)]
        # Continuing from the last chunk released gives the same chunks, without replanning.
        released += settled_chunks(envelope[:cut], frame_s, duration, policy, parallelism,
                                   after=released[-1] if released else None)
        assert released == prefix
    # Nearly the whole plan is settled before the last frames arrive.
    settled = settled_chunks(envelope, frame_s, duration, policy, parallelism)
    assert len(full) - len(settled) <= 2
