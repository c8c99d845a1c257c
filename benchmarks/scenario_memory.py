"""(e) The server's peak memory against audio length: 10 and 30 minutes (WAV), 110 minutes (100 MB MP3).

Peak = the server process's high-water resident memory (VmHWM), each length in a fresh
process, beside the same process's peak once it has started (model loaded, no job yet). On
the embedded engine, and on the remote engine against the fake upstream (the same decode,
chunk and merge path, with no model in the process). Flat means the longest file costs about
what the shortest does.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks.client import LatencyModel, fake_upstream, local_server, remote_server, run_job
from benchmarks.harness import Chart, Outcome, Progress, Row, mb
from benchmarks.inputs import long_file
from tests.serverproc import Server

LENGTHS = ((10, "wav"), (30, "wav"), (110, "mp3"))
TARGET_MB = 300.0
LATENCY = LatencyModel(0.2, 0.02)


@dataclass(frozen=True)
class Peak:
    """One job in a fresh server process."""

    engine: str
    minutes: float
    size_mb: float
    idle_mb: float  # peak after start-up, before the job
    peak_mb: float
    seconds: float
    chunks: int


def _server(engine: str, data: Path, stack: ExitStack) -> Server:
    if engine == "local":
        return stack.enter_context(local_server(data))
    fake = stack.enter_context(fake_upstream(LATENCY))
    return stack.enter_context(remote_server(data, fake.base_url))


def peak_for(path: Path, minutes: float, engine: str = "local") -> Peak:
    """Run ``path`` through a fresh server on ``engine`` ("local" or "remote"); its memory before and after."""
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mem-")))
        server = _server(engine, data, stack)
        idle = server.peak_rss_mb()
        done = run_job(server, path, language="en")
        return Peak(engine, minutes, path.stat().st_size / 1e6, idle, server.peak_rss_mb(), done["seconds"],
                    done["progress"]["chunks_total"])


def measure(engines: tuple[str, ...], progress: Progress) -> list[Peak]:
    peaks = []
    for minutes, fmt in LENGTHS:
        audio = long_file(minutes, fmt)
        for engine in engines:
            peaks.append(peak_for(audio.path, minutes, engine))
            p = peaks[-1]
            progress.step(f"{engine} {minutes} min {fmt}: peak {p.peak_mb:.0f} MB (idle {p.idle_mb:.0f}), "
                          f"{p.seconds:.0f} s")
    return peaks


def _rows(peaks: list[Peak], engine: str) -> list[Row]:
    mine = [p for p in peaks if p.engine == engine]
    shortest = mine[0]
    name = {"local": "embedded engine", "remote": "remote engine (fake upstream)"}[engine]
    return [Row("memory", f"peak, {name}, {p.minutes:g} min ({p.size_mb:.0f} MB, {p.chunks} chunks)",
                mb(p.peak_mb), f"idle {mb(p.idle_mb)}; {shortest.minutes:g} min {mb(shortest.peak_mb)}",
                p.peak_mb / shortest.peak_mb, f"× the {shortest.minutes:g}-min peak", f"< {TARGET_MB:.0f} MB, flat",
                p.peak_mb < TARGET_MB and p.peak_mb < shortest.peak_mb * 1.15)
            for p in mine]


def run(progress: Progress, repeat: int) -> Outcome:
    engines = ("local", "remote")
    peaks = measure(engines, progress)
    x = [f"{m} min" for m, _ in LENGTHS]
    series = {f"{e} peak": [p.peak_mb for p in peaks if p.engine == e] for e in engines}
    series |= {f"{e} idle": [p.idle_mb for p in peaks if p.engine == e] for e in engines}
    chart = Chart("memory_peak", "Server peak memory (VmHWM) against audio length", x, series, "MB", "line",
                  "audio length")
    return Outcome("memory", [r for e in engines for r in _rows(peaks, e)], [chart],
                   {"peaks": [p.__dict__ for p in peaks]})

