"""Table tests for merging per-chunk transcripts."""

from __future__ import annotations

from typing import Sequence

import pytest

from stt_server.audio.chunking import Chunk
from stt_server.audio.merge import merge_transcripts, normalise_word
from stt_server.audio.transcript import Segment, Transcript, Word

Seg = tuple[float, float, str]


def part(index: int, start: float, end: float, segs: Sequence[Seg], silent: bool = False) -> tuple[Chunk, Transcript]:
    """A chunk and its engine transcript, segment times relative to the chunk."""
    return Chunk(index, start, end, silent), Transcript(tuple(Segment(s, e, t) for s, e, t in segs))


def timeline(t: Transcript) -> list[Seg]:
    return [(s.start, s.end, s.text.strip()) for s in t.segments]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        pytest.param(
            [part(0, 0, 30, [(0, 2, " Hello")]), part(1, 30, 60, [(1, 3, " world")])],
            [(0, 2, "Hello"), (31, 33, "world")],
            id="offsets",
        ),
        pytest.param(
            [part(2, 60, 90, [(0.5, 1, "c")]), part(0, 0, 30, [(0, 1, "a")]), part(1, 30, 60, [(0, 1, "b")])],
            [(0, 1, "a"), (30, 31, "b"), (60.5, 61, "c")],
            id="out-of-order",
        ),
        pytest.param(
            [part(0, 0, 30, [(0, 1, "a")]), part(1, 30, 60, []), part(2, 60, 90, [(2, 3, "c")])],
            [(0, 1, "a"), (62, 63, "c")],
            id="empty-chunk",
        ),
        pytest.param(
            [part(0, 0, 30, [(0, 1, "a")]), part(1, 30, 60, [], silent=True), part(2, 60, 75, [(0, 1, "c")])],
            [(0, 1, "a"), (60, 61, "c")],
            id="silent-chunk",
        ),
        pytest.param([], [], id="nothing"),
        pytest.param(
            [part(0, 0, 30, [(0, 1, "a"), (1, 2, "   "), (2, 3, ""), (3, 4, "b")])],
            [(0, 1, "a"), (3, 4, "b")],
            id="empty-text-dropped",
        ),
        pytest.param(
            [part(0, 0, 30, [(-0.5, 1, "a"), (28, 31.5, "b")]), part(1, 30, 60, [(-0.2, 1, "c"), (29, 35, "d")])],
            [(0, 1, "a"), (28, 30, "b"), (30, 31, "c"), (59, 60, "d")],
            id="clamped-into-chunk",
        ),
        pytest.param(
            [part(0, 0, 30, [(5, 6, "a"), (4, 4.5, "b"), (7, 6.5, "c")])],
            [(5, 6, "a"), (5, 5, "b"), (7, 7, "c")],
            id="monotonic",
        ),
    ],
)
def test_placement(parts: list[tuple[Chunk, Transcript]], expected: list[Seg]) -> None:
    merged = merge_transcripts(parts, 90.0, "en")
    assert timeline(merged) == expected
    assert merged.duration == 90.0 and merged.language == "en"


@pytest.mark.parametrize(
    ("before", "after", "expected_text"),
    [
        # the boundary cut "hello": both sides heard it
        ([(25, 30, " and then hello")], [(0, 2, " hello there")], "and then hello there"),
        # case and punctuation differ across the seam
        ([(25, 30, " and then Hello,")], [(0, 2, " hello. There")], "and then Hello, There"),
        # a phrase of up to four words
        ([(25, 30, " we went to the shop")], [(0.1, 2, " to the shop and back")], "we went to the shop and back"),
        ([(25, 30, " one two three four five")], [(0, 2, " two three four five six")],
         "one two three four five six"),
        # the whole first segment is the repeat: it disappears
        ([(25, 30, " said hello")], [(0, 0.4, " hello"), (0.5, 2, " there")], "said hello there"),
        # within the seam gap but a little apart
        ([(25, 29.8, " said hello")], [(0.2, 2, " hello there")], "said hello there"),
        # "the the" after a real pause: speech, kept
        ([(25, 28.3, " I saw the")], [(1.0, 3, " the cat")], "I saw the the cat"),
        # overlapping in time but not a repeat of the *end* of the previous chunk
        ([(25, 30, " hello world")], [(0, 2, " hello again")], "hello world hello again"),
        # a repeat deeper than four words is not a seam artefact
        ([(25, 30, " a b c d e")], [(0, 2, " a b c d e f")], "a b c d e a b c d e f"),
        # punctuation-only tokens are skipped when matching and dropped with the repeat
        ([(25, 30, " wait -")], [(0, 2, " - wait, what")], "wait - what"),
        ([(25, 30, " so -- yes")], [(0, 2, " yes -- no")], "so -- yes -- no"),
    ],
)
def test_seams(before: list[Seg], after: list[Seg], expected_text: str) -> None:
    merged = merge_transcripts([part(0, 0, 30, before), part(1, 30, 60, after)], 60.0)
    assert merged.text == expected_text
    assert all(s.text.strip() for s in merged.segments)


def test_seam_with_word_timings() -> None:
    before = Segment(25.0, 30.0, " I said hello", words=(
        Word(25.0, 25.3, " I"), Word(25.4, 29.0, " said"), Word(29.6, 30.0, " hello"),
    ))
    after = Segment(0.0, 2.0, " hello there", tokens=(1, 2), words=(Word(0.0, 0.3, " hello"), Word(0.5, 0.9, " there")))
    merged = merge_transcripts(
        [(Chunk(0, 0, 30), Transcript((before,))), (Chunk(1, 30, 60), Transcript((after,)))], 60.0)
    second = merged.segments[1]
    assert second.text.strip() == "there"
    assert [w.word.strip() for w in second.words] == ["there"]
    assert second.start == pytest.approx(30.5)
    assert second.tokens == ()  # ids no longer match the text
    assert merged.text == "I said hello there"


def test_words_far_apart_kept_even_if_segments_touch() -> None:
    # segment ends are loose, word times are not: 1.2 s between the two "the"s
    before = Segment(25.0, 30.0, " saw the", words=(Word(25.0, 27.5, " saw"), Word(27.6, 28.8, " the")))
    after = Segment(0.0, 2.0, " the cat", words=(Word(0.0, 0.4, " the"), Word(0.5, 0.9, " cat")))
    merged = merge_transcripts(
        [(Chunk(0, 0, 30), Transcript((before,))), (Chunk(1, 30, 60), Transcript((after,)))], 60.0)
    assert merged.text == "saw the the cat"


def test_words_shifted_and_clamped() -> None:
    seg = Segment(1.0, 2.0, " hi there", words=(Word(0.8, 1.4, " hi"), Word(1.5, 2.6, " there")))
    merged = merge_transcripts([(Chunk(3, 90, 92.5), Transcript((seg,)))], 100.0, "de")
    (out,) = merged.segments
    assert (out.start, out.end) == (91.0, 92.0)
    assert [(w.start, w.end) for w in out.words] == [(91.0, 91.4), (91.5, 92.0)]
    assert merged.language == "de"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("Hello,", "hello"), (" world.", "world"), ("don't", "dont"), ("--", ""), ("Straße", "straße"), ("42%", "42")],
)
def test_normalise_word(word: str, expected: str) -> None:
    assert normalise_word(word) == expected
