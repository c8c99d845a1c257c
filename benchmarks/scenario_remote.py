"""(b) The remote engine against a fake OpenAI-compatible upstream that answers after a latency model.

1. The server end to end with chunks in parallel (the engine's concurrency) beside the same
   server taking one chunk at a time, and beside the ideal: the upstream's total answer time
   divided by the concurrency.
2. The upstream protocol: HTTP/2 on one pooled connection beside a fresh HTTP/1.1 connection per
   request (and pooled HTTP/1.1, the engine's default), over TLS, reusing upstream_protocol.py.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks import upstream_protocol as proto
from benchmarks.client import LatencyModel, fake_upstream, remote_server, run_job
from benchmarks.harness import Chart, Outcome, Progress, Row, median, secs
from benchmarks.inputs import long_file

LATENCY = LatencyModel(0.2, 0.02)
CONCURRENCY = 8
TARGET_EFFICIENCY = 0.8


@dataclass(frozen=True)
class Speedup:
    """One file through the server one chunk at a time and in parallel."""

    serial_s: float
    parallel_s: float
    calls: int
    upstream_s: float  # the latency model summed over the calls: one-at-a-time's floor
    concurrency: int

    @property
    def speedup(self) -> float:
        return self.serial_s / self.parallel_s

    @property
    def ideal_s(self) -> float:
        """One chunk at a time's time over the ideal speedup: the same ideal as :attr:`efficiency`."""
        return self.serial_s / self.ideal_speedup

    @property
    def ideal_speedup(self) -> float:
        """``concurrency``, less when the calls do not fill whole rounds (17 calls at 8: 3 rounds)."""
        return self.calls / math.ceil(self.calls / self.concurrency)

    @property
    def efficiency(self) -> float:
        return self.speedup / self.ideal_speedup


def measure_speedup(audio: Path, latency: LatencyModel, concurrency: int = CONCURRENCY,
                    step: Callable[[str], None] = lambda _: None, upload_format: str = "wav") -> Speedup:
    """Run ``audio`` through a fresh server twice: chunk concurrency 1, then the default (parallel).

    Chunks go up as WAV by default: this measures how well the dispatch overlaps upstream latency.
    What encoding a compressed format costs (CPU per chunk) is the wire scenario's measure."""
    times: dict[str, float] = {}
    with fake_upstream(latency) as fake:
        for mode, chunk_concurrency in (("serial", 1), ("parallel", 0)):
            fake.reset()
            with tempfile.TemporaryDirectory(prefix="bench-remote-") as data, remote_server(
                    Path(data), fake.base_url, concurrency,
                    env={"STT_PIPELINE_CHUNK_CONCURRENCY": str(chunk_concurrency),
                         "STT_BENCH_UPLOAD_FORMAT": upload_format}) as server:
                times[mode] = run_job(server, audio, language="en")["seconds"]
            step(f"{mode}: {times[mode]:.2f} s, {fake.requests} upstream calls")
        upstream_s = sum(latency.of(call.duration_s) for call in fake.calls)
        return Speedup(times["serial"], times["parallel"], len(fake.calls), upstream_s, concurrency)


def _pipeline_rows(runs: list[Speedup], latency: LatencyModel, audio: str) -> list[Row]:
    serial, parallel = median([r.serial_s for r in runs]), median([r.parallel_s for r in runs])
    first = runs[0]
    speedup = serial / parallel
    where = (f"{audio}, {first.calls} WAV chunks, latency {latency}, concurrency {first.concurrency}; "
             f"ideal {first.ideal_speedup:.1f}× in whole rounds; {speedup / first.ideal_speedup:.2f} of it")
    return [
        Row("remote engine", f"parallel vs one chunk at a time ({where})", secs(parallel), secs(serial),
            speedup, "× faster", f"≥ {TARGET_EFFICIENCY:g} × {first.ideal_speedup:.1f}",
            speedup >= TARGET_EFFICIENCY * first.ideal_speedup),
    ]


def _protocol(latency: LatencyModel, repeat: int, progress: Progress) -> tuple[list[Row], Chart, dict[str, Any]]:
    """Each payload: uploads at concurrency 16 over TLS, HTTP/2 pooled / HTTP/1.1 pooled / HTTP/1.1 new."""
    uploads, conc = 64, 16
    ca, cert = proto.tls_files()
    process, port = proto.start_server(latency.fixed_s, cert, latency.per_audio_s)
    url = f"https://127.0.0.1:{port}/v1"
    columns: dict[str, Callable[[Any], Any]] = {
        "HTTP/2 pooled": lambda r: lambda: proto.run_engine(url, True, ca, r, uploads, conc),
        "HTTP/1.1 pooled": lambda r: lambda: proto.run_engine(url, False, ca, r, uploads, conc),
        "HTTP/1.1 new connection each": lambda r: lambda: proto.run_fresh(url, ca, r, uploads, conc),
    }
    rows, raw = [], {}
    series: dict[str, list[float]] = {name: [] for name in columns}
    payloads = {"16 KB": 16 * 1024, "1 MB (30 s WAV)": 960_044}
    try:
        for label, size in payloads.items():
            request = proto.request_of(size)
            walls = {}
            for name, make in columns.items():
                runs, cpus, failed = proto.measure_runs(make(request), repeat)
                walls[name] = median(runs)
                raw[f"{label} / {name}"] = {"wall_s": runs, "cpu_s": cpus, "failed": failed}
                series[name].append(walls[name])
                progress.step(f"{label} {name}: {walls[name]:.2f} s" + (f", {failed} failed" if failed else ""))
            fresh = walls["HTTP/1.1 new connection each"]
            for name in ("HTTP/2 pooled", "HTTP/1.1 pooled"):
                rows.append(Row("remote engine", f"{name} vs new HTTP/1.1 connection per request, {uploads} × {label} "
                                f"at {conc} in flight, TLS", secs(walls[name]), secs(fresh), fresh / walls[name],
                                "× faster"))
    finally:
        process.communicate(timeout=10)  # closing its stdin stops the fake
    chart = Chart("remote_protocol", f"{uploads} uploads at {conc} in flight, TLS, latency {latency}",
                  list(payloads), series, "seconds (median)")
    return rows, chart, raw


def run(progress: Progress, repeat: int) -> Outcome:
    audio = long_file(10)
    runs = []
    for n in range(repeat):
        progress.step(f"10-min WAV, run {n + 1}/{repeat}")
        runs.append(measure_speedup(audio.path, LATENCY, step=progress.step))
    rows = _pipeline_rows(runs, LATENCY, "10-min WAV")
    protocol_rows, protocol_chart, protocol_raw = _protocol(LATENCY, repeat, progress)
    pipeline_chart = Chart("remote_parallel", f"10-min WAV through the remote engine, latency {LATENCY}",
                           ["one chunk at a time", f"parallel ({CONCURRENCY})", "ideal"],
                           {"seconds": [median([r.serial_s for r in runs]), median([r.parallel_s for r in runs]),
                                        statistics.median(r.ideal_s for r in runs)]}, "seconds (median)")
    return Outcome("remote", rows + protocol_rows, [pipeline_chart, protocol_chart],
                   {"pipeline": [r.__dict__ for r in runs], "protocol": protocol_raw, "latency": str(LATENCY)})
