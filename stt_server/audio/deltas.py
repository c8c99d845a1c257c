"""Progressive transcript text: each chunk's text, in order, as soon as every earlier chunk is done.

Chunks finish in any order; a ``transcript.delta`` event carries the text of the chunks that a
completion made contiguous with the start, so the deltas of a job, read in order, are its
transcript. Nothing is kept between calls: the pipeline's ``done`` mapping gains one key per
finished chunk, in the order the chunks finished (a resumed job's earlier chunks first), and that
order says which chunks each completion released (and so each chunk is released exactly once).
"""

from __future__ import annotations

from typing import Collection, Mapping

from stt_server.jobs.events import EventBus
from stt_server.audio.transcript import Transcript

DELTA_EVENT = "transcript.delta"


def contiguous_end(done: Collection[int], start: int = 0) -> int:
    """The first chunk index at or after ``start`` that is not done."""
    end = start
    while end in done:
        end += 1
    return end


def released_by(finished: list[int], index: int) -> range:
    """The chunks whose text the completion of ``index`` releases, given the indices in the order
    they finished (``index`` among them): those that became contiguous with chunk 0 just then."""
    before = set(finished[: finished.index(index)])
    start = contiguous_end(before)
    return range(start, contiguous_end(before | {index}, start))


def delta_text(done: Mapping[int, Transcript], chunks: range) -> str:
    """The released chunks' text, with a space before it when earlier chunks already said something."""
    text = " ".join(t for t in (done[i].text.strip() for i in chunks) if t)
    spoken_before = any(done[i].text.strip() for i in range(chunks.start))
    return f" {text}" if text and spoken_before else text


async def emit_chunk_delta(bus: EventBus, job_id: str, done: Mapping[int, Transcript], index: int) -> None:
    """Called once per chunk, after its result is saved: emit the text it released (if any)."""
    chunks = released_by(list(done), index)
    text = delta_text(done, chunks) if chunks else ""
    if text:
        await bus.emit(DELTA_EVENT, job_id, text=text, first_chunk=chunks.start, last_chunk=chunks.stop - 1)


async def emit_whole_delta(bus: EventBus, job_id: str, transcript: Transcript) -> None:
    """A transcript that came whole (a cache hit on the file): one delta with all its text."""
    if transcript.text:
        await bus.emit(DELTA_EVENT, job_id, text=transcript.text, first_chunk=0, last_chunk=None)
