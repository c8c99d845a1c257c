"""Progressive text: which chunks a completion releases (a pure table), and that every chunk is
released exactly once, in order, whatever order the chunks finish in."""

from __future__ import annotations

import itertools

import pytest

from stt_server.audio.deltas import contiguous_end, delta_text, released_by
from stt_server.audio.transcript import Segment, Transcript


@pytest.mark.parametrize(("done", "start", "end"), [
    (set(), 0, 0), ({0}, 0, 1), ({1, 2}, 0, 0), ({0, 1, 3}, 0, 2), ({0, 1, 3}, 3, 4), ({5}, 2, 2)])
def test_contiguous_end(done: set[int], start: int, end: int) -> None:
    assert contiguous_end(done, start) == end


@pytest.mark.parametrize(("finished", "index", "released"), [
    ([0], 0, range(0, 1)),
    ([1], 1, range(1, 1)),
    ([1, 0], 0, range(0, 2)),
    ([1, 0, 2], 2, range(2, 3)),
    ([2, 1], 1, range(1, 1)),
    ([2, 1, 0], 0, range(0, 3)),
    ([0, 1, 2, 4, 3], 3, range(3, 5)),  # a resumed job: 0-2 and 4 were done before the restart
    ([0, 1, 2, 4, 3], 4, range(4, 4)),
])
def test_released_by(finished: list[int], index: int, released: range) -> None:
    assert released_by(finished, index) == released


@pytest.mark.parametrize("order", list(itertools.permutations(range(5))))
def test_every_chunk_is_released_once_in_order(order: tuple[int, ...]) -> None:
    released = [i for n, index in enumerate(order) for i in released_by(list(order[: n + 1]), index)]
    assert released == [0, 1, 2, 3, 4]


def _t(text: str) -> Transcript:
    return Transcript((Segment(0.0, 1.0, text),) if text else ())


@pytest.mark.parametrize(("texts", "chunks", "expected"), [
    (["Hello", "world"], range(0, 2), "Hello world"),
    (["Hello", "world"], range(1, 2), " world"),
    (["", "world"], range(1, 2), "world"),  # nothing said before: no leading space
    (["Hi", "", "there"], range(1, 3), " there"),
    (["Hi", ""], range(1, 2), ""),
])
def test_delta_text(texts: list[str], chunks: range, expected: str) -> None:
    assert delta_text({i: _t(t) for i, t in enumerate(texts)}, chunks) == expected
