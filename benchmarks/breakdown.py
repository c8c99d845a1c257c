"""Where one job's time goes on the embedded engine: each stage of the pipeline run on its own, in
this process, on the held-back 10-minute MP3 (benchmarks/heldout.py), wall and CPU seconds.

    .venv/bin/python -m benchmarks.breakdown [--minutes 10] [--batch-size N] [--threads N] [--workers N]

Stages: probe; the envelope pass (the whole file decoded once to find silences, its samples kept
in a file, as the server does) and the plan; each chunk read back from that file (beside what
decoding each chunk again would cost: one ffmpeg run per chunk, or PyAV in-process); the engine
(batched model calls); the merge; the database (the plan and every chunk's result written to a
real SQLite file). In the server the envelope pass, the chunk reads and the engine overlap; here
they run one after another so each can be timed. CPU seconds include child processes (ffmpeg).
Inside the engine, the seconds of each part of its model calls, as the engine counts them
(``model_seconds`` in ``/v1/admin/stats``): features, encoder, batched decoder calls, open tails
read from a window's encoder output, temperature fallbacks; "other" is the rest of the engine's
busy time (cutting segments, tokenizing, the hop to and from the model thread).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import av
import numpy as np

from benchmarks.heldout import heldout_file
from stt_server.audio.chunking import ChunkPolicy, plan_chunks
from stt_server.audio.decoded import DecodedAudio
from stt_server.audio.media import envelope_blocks, extract_pcm, probe
from stt_server.audio.merge import merge_transcripts
from stt_server.engines.base import ChunkRequest
from stt_server.engines.local import LocalEngine
from stt_server.jobs.job import Job, Status, new_job_id
from stt_server.jobs.store import EventRecord, Store
from stt_server.observability.memory import tune_malloc
from stt_server.settings import LocalEngineSettings
from tests.corpus import wer

T = TypeVar("T")


def cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (ffmpeg)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(rows: list[tuple[str, float, float]], name: str, work: Callable[[], T]) -> T:
    wall, cpu = time.perf_counter(), cpu_s()
    result = work()
    rows.append((name, time.perf_counter() - wall, cpu_s() - cpu))
    return result


def envelope_pass(path: Path, decoded: DecodedAudio) -> np.ndarray:
    with decoded.writing():
        return np.concatenate(list(envelope_blocks(path, sink=decoded.write)))


def pyav_span(path: Path, start_s: float, end_s: float) -> np.ndarray:
    """The span decoded in-process with PyAV: seek, decode, resample to 16 kHz mono."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        container.seek(max(0, int((start_s - 0.5) / stream.time_base)), stream=stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        parts, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = float(frame.pts * stream.time_base)
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
            if float(frame.pts * stream.time_base) > end_s:
                break
    audio = np.concatenate(parts)
    skip = round((start_s - (first or 0.0)) * 16000)
    return audio[skip:skip + round((end_s - start_s) * 16000)]


async def engine_pass(samples: list[np.ndarray], settings: LocalEngineSettings) -> tuple[list[Any], dict[str, Any]]:
    engine = LocalEngine(settings)
    await engine.start()
    try:
        # twice what the engine's calls hold at once: the next batch is waiting when one ends
        gate = asyncio.Semaphore(2 * engine.limits.concurrency)

        async def one(s: np.ndarray) -> Any:
            async with gate:
                return await engine.transcribe(ChunkRequest(samples=s, language="en"))

        began = time.perf_counter()
        results = await asyncio.gather(*(one(s) for s in samples))
        return results, {**engine.stats(), "seconds": time.perf_counter() - began}
    finally:
        await engine.close()


async def database_pass(folder: Path, chunks: list[Any], results: list[Any], duration_s: float) -> None:
    store = await Store.open(folder / "jobs.db")
    job = Job(new_job_id(), Status.RUNNING, "normal", "x.mp3", 1, "0" * 64, duration_s, "local", "tiny.en", time.time())
    await store.insert_job(job)
    await store.save_plan(job.id, [(c.index, c.start, c.end, c.silent) for c in chunks], len(chunks))
    for chunk, result in zip(chunks, results):  # each result with its event, as the pipeline stores them
        event = EventRecord("chunk.completed", {"index": chunk.index, "chunks_total": len(chunks)}, time.time())
        await store.complete_chunk(job.id, chunk.index, result.to_dict(), "key", event)
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    shipped = LocalEngineSettings()
    parser.add_argument("--batch-size", type=int, default=shipped.batch_size)
    parser.add_argument("--threads", type=int, default=shipped.threads, help="CPU threads of each model call")
    parser.add_argument("--workers", type=int, default=shipped.workers, help="model calls at once")
    args = parser.parse_args()
    settings = LocalEngineSettings(batch_size=args.batch_size, threads=args.threads, workers=args.workers)
    tune_malloc(reuse_buffers=shipped.reuse_buffers)
    audio = heldout_file(args.minutes)
    rows: list[tuple[str, float, float]] = []
    info = timed(rows, "probe", lambda: probe(audio.path))
    duration = float(info.duration_s or 0.0)
    folder = tempfile.TemporaryDirectory()
    decoded = DecodedAudio(Path(folder.name) / "job.pcm")
    envelope = timed(rows, "envelope pass (whole file decoded once, kept)", lambda: envelope_pass(audio.path, decoded))
    chunks = timed(rows, "plan (silences → chunks)", lambda: plan_chunks(envelope, 0.05, duration, ChunkPolicy(), 1))
    spans = [(c.start, c.end) for c in chunks if not c.silent]
    read = timed(rows, f"chunks read back from the decoded file ({len(spans)})",
                 lambda: [decoded.read(a, b) for a, b in spans])
    samples = [s for s in read if s is not None]
    assert len(samples) == len(spans), "a span was missing from the decoded file"
    timed(rows, "  the same spans, one ffmpeg run each", lambda: [extract_pcm(audio.path, a, b) for a, b in spans])
    timed(rows, "  the same spans with PyAV in-process", lambda: [pyav_span(audio.path, a, b) for a, b in spans])
    folder.cleanup()
    results, stats = timed(rows, f"engine (batches of {args.batch_size})",
                           lambda: asyncio.run(engine_pass(samples, settings)))
    spoken = [c for c in chunks if not c.silent]
    merged = timed(rows, "merge", lambda: merge_transcripts(list(zip(spoken, results)), duration, language="en"))
    with tempfile.TemporaryDirectory() as folder:
        timed(rows, "database (plan + every chunk's result)",
              lambda: asyncio.run(database_pass(Path(folder), spoken, results, duration)))
    total = sum(wall for name, wall, _ in rows if not name.startswith("  "))
    print(f"{audio.path.name}: {duration:.0f} s of audio, {len(chunks)} chunks, {stats['windows']} encoder windows "
          f"in {stats['rounds']} batched calls (mean batch {stats['mean_batch']}), WER {wer(audio.reference, merged.text):.3f}")
    print(f"{'stage':44} {'wall s':>8} {'CPU s':>8} {'share':>7}")
    for name, wall, cpu in rows:
        share = "" if name.startswith("  ") else f"{100 * wall / total:6.1f}%"
        print(f"{name:44} {wall:8.2f} {cpu:8.2f} {share:>7}")
    print(f"{'sum of stages':44} {total:8.2f}")
    print_model_parts(stats)


def print_model_parts(stats: dict[str, Any]) -> None:
    """The engine's busy time split into the parts of its model calls."""
    seconds, calls, busy = stats["model_seconds"], stats["model_calls"], stats["busy_seconds"]
    print(f"inside the engine ({busy:.2f} s busy, {stats['workers']} call(s) at once, "
          f"{stats['threads']} thread(s) each):")
    for part, s in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"  {part:42} {s:8.2f} {'':8} {100 * s / busy:6.1f}%  ({calls[part]} calls)")
    other = busy - sum(seconds.values())
    print(f"  {'other':42} {other:8.2f} {'':8} {100 * other / busy:6.1f}%")


if __name__ == "__main__":
    main()
