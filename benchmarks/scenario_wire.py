"""(b2) The remote engine across a narrow link: the 100 MB MP3 (109 min) at concurrency 16 against a
fake upstream that reads every request body through one shared 20 Mbit/s link, on top of its
latency model, once per upload format.

Reported per format: end-to-end time, bytes on the wire (request bodies as the upstream read
them), and the ratio to the ideal, where ideal = split time + max(rounds × per-chunk latency,
bytes / bandwidth), rounds = ceil(chunks / concurrency), and split time is the server's own
planning pass (job start to ``chunk.planned``).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from benchmarks.client import LatencyModel, fake_upstream, job_events, remote_server, run_job
from benchmarks.harness import Chart, Outcome, Progress, Row, secs
from benchmarks.inputs import long_file
from benchmarks.scenario_remote import LATENCY, TARGET_EFFICIENCY

BANDWIDTH_BPS = 20e6
CONCURRENCY = 16
FORMATS = ("opus", "wav")
TARGET_WIRE_RATIO = 0.3  # bytes on the wire / the MP3's own size


@dataclass(frozen=True)
class WireRun:
    """One run of one file in one upload format."""

    upload_format: str
    seconds: float
    split_s: float
    calls: int
    body_bytes: int
    chunk_latency_s: float  # the latency model at the mean chunk length
    concurrency: int
    bandwidth_bps: float
    source_bytes: int

    @property
    def upload_s(self) -> float:
        return self.body_bytes * 8 / self.bandwidth_bps

    @property
    def ideal_s(self) -> float:
        rounds = math.ceil(self.calls / self.concurrency)
        return self.split_s + max(rounds * self.chunk_latency_s, self.upload_s)

    @property
    def of_ideal(self) -> float:
        return self.ideal_s / self.seconds

    @property
    def wire_ratio(self) -> float:
        return self.body_bytes / self.source_bytes


def measure_wire(audio: Path, upload_format: str, latency: LatencyModel = LATENCY,
                 bandwidth_bps: float = BANDWIDTH_BPS, concurrency: int = CONCURRENCY,
                 step: Callable[[str], None] = lambda _: None) -> WireRun:
    """``audio`` through a fresh server whose upstream sits behind the link."""
    with fake_upstream(latency, bandwidth_bps) as fake, tempfile.TemporaryDirectory(prefix="bench-wire-") as data, \
            remote_server(Path(data), fake.base_url, concurrency,
                          env={"STT_BENCH_UPLOAD_FORMAT": upload_format}) as server:
        job = run_job(server, audio, language="en")
        events = {e["event"]: e for e in job_events(server, job["id"])}
        split_s = events["chunk.planned"]["created_at"] - events["job.started"]["created_at"]
        mean_s = sum(c.duration_s for c in fake.calls) / max(1, len(fake.calls))
        run = WireRun(upload_format, job["seconds"], split_s, len(fake.calls), fake.body_bytes,
                      latency.of(mean_s), concurrency, bandwidth_bps, audio.stat().st_size)
    step(f"{upload_format}: {run.seconds:.1f} s, {run.body_bytes / 1e6:.1f} MB on the wire, "
         f"ideal {run.ideal_s:.1f} s ({run.of_ideal:.2f} of ideal)")
    return run


def rows_of(runs: list[WireRun], where: str) -> list[Row]:
    rows = []
    for run in runs:
        link = f"{run.bandwidth_bps / 1e6:g} Mbit/s"
        rows.append(Row("remote over a link", f"{run.upload_format} chunks, end to end vs ideal ({where}, "
                        f"{run.calls} chunks at {run.concurrency}, {link})", secs(run.seconds), secs(run.ideal_s),
                        run.of_ideal, "of ideal", f"≥ {TARGET_EFFICIENCY:g}", run.of_ideal >= TARGET_EFFICIENCY))
        rows.append(Row("remote over a link", f"{run.upload_format} chunks, bytes on the wire vs the MP3",
                        f"{run.body_bytes / 1e6:.1f} MB", f"{run.source_bytes / 1e6:.1f} MB", run.wire_ratio,
                        "of the MP3", f"≤ {TARGET_WIRE_RATIO:g}", run.wire_ratio <= TARGET_WIRE_RATIO))
    return rows


def run(progress: Progress, repeat: int) -> Outcome:
    audio = long_file(110, "mp3")
    runs = []
    for fmt in FORMATS:  # one run each: the whole file takes minutes on two cores
        progress.step(f"109-min MP3, {fmt} chunks over {BANDWIDTH_BPS / 1e6:g} Mbit/s")
        runs.append(measure_wire(audio.path, fmt, step=progress.step))
    chart = Chart("remote_wire", f"109-min MP3 at {CONCURRENCY} in flight over {BANDWIDTH_BPS / 1e6:g} Mbit/s",
                  list(FORMATS), {"seconds": [r.seconds for r in runs], "ideal": [r.ideal_s for r in runs]},
                  "seconds")
    raw = {r.upload_format: {**asdict(r), "ideal_s": r.ideal_s, "of_ideal": r.of_ideal} for r in runs}
    return Outcome("wire", rows_of(runs, "109-min MP3"), [chart], {"runs": raw, "latency": str(LATENCY)})
