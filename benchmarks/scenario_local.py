"""(a) The embedded engine on held-back speech: the server end to end beside faster-whisper called
directly, sequentially and batched, and the server's throughput with five jobs at once.

The input is speech nothing in the project was tuned on (benchmarks/heldout.py: recorded prompts
with natural pauses, MP3), never the test corpus looped. Same model (tiny.en, int8), same two
threads, same run; each contestant runs in its own process, model load excluded from the clock:

- the server: POST /v1/jobs to completed (its own chunking, decoding, merge and database), with
  the shipped settings (one model call at a time, on one thread, its freed buffers kept for the
  next call) and with ``[local] workers = 2`` (two calls at once: faster, more memory), with
  batches of 2 and of 1 (a little slower, less memory);
- faster-whisper ``WhisperModel.transcribe`` on the whole file, beam 1 (one window at a time);
- faster-whisper ``BatchedInferencePipeline``, batch 8, beam 1, timestamps on (its VAD cuts).

Targets: the server at most 1.0x the batched call's time, its word error rate within 1 point of
the batched call's, its peak memory under 300 MB; and five concurrent jobs of about 3 minutes in
at most 1.2x the time of the same audio as one job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.client import local_server, run_job
from benchmarks.harness import Chart, Outcome, Progress, Row, mb, median
from benchmarks.heldout import heldout_file, heldout_parts
from benchmarks.scenario_memory import TARGET_MB
from tests.corpus import wer

MINUTES = 10
LOAD_MINUTES, LOAD_JOBS = 15, 5
TARGET_VS_BATCHED = 1.0
TARGET_WER_POINTS = 0.01
TARGET_LOAD_RATIO = 1.2

DIRECT = """
import json, resource, sys, time
from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio
from stt_server.engines.local import resolve_model
path, mode = sys.argv[1], sys.argv[2]
model = WhisperModel(resolve_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=2)
began = time.perf_counter()
if mode == "batched":
    segments, info = BatchedInferencePipeline(model).transcribe(path, language="en", beam_size=1, batch_size=8,
                                                                without_timestamps=False)
else:
    segments, info = model.transcribe(path, language="en", beam_size=1)
text = " ".join(s.text.strip() for s in segments)
print(json.dumps({"seconds": time.perf_counter() - began, "text": text,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SERVER = "server (end to end)"
SERVER_TWO = "server, workers = 2 × threads = 1"
SERVER_TWO_SINGLE = "server, workers = 2 × threads = 1, batches of 1"
OTHER_SETTINGS = {SERVER_TWO: {"STT_LOCAL_WORKERS": "2"},
                  SERVER_TWO_SINGLE: {"STT_LOCAL_WORKERS": "2", "STT_LOCAL_BATCH_SIZE": "1"}}
SEQUENTIAL = "faster-whisper direct, beam 1"
BATCHED = "faster-whisper batched, batch 8, beam 1"


def direct(path: Path, mode: str) -> dict[str, Any]:
    """faster-whisper on the whole file in a fresh process: seconds (after the model load), text, peak MB."""
    out = subprocess.run([sys.executable, "-c", DIRECT, str(path), mode], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def through_server(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A fresh server (model loaded before the clock starts): seconds from POST to done, text, peak MB."""
    with tempfile.TemporaryDirectory(prefix="bench-local-") as data, local_server(Path(data), env) as server:
        done = run_job(server, path, language="en")
        text = server.get(f"/v1/jobs/{done['id']}/transcript")["text"]
        engine = server.get("/v1/admin/stats").get("engines", {}).get("local", {})
        return {"seconds": done["seconds"], "text": text, "peak_mb": server.peak_rss_mb(),
                "chunks": done["progress"]["chunks_total"], "windows": engine.get("windows"),
                "mean_batch": engine.get("mean_batch")}


def under_load(whole: Path, parts: list[Path]) -> dict[str, float]:
    """The same audio as one job, then as ``len(parts)`` jobs submitted at once, on one fresh server each."""
    with tempfile.TemporaryDirectory(prefix="bench-load-") as data, local_server(Path(data)) as server:
        one = run_job(server, whole, language="en")["seconds"]
    with tempfile.TemporaryDirectory(prefix="bench-load-") as data, local_server(Path(data)) as server:
        ends: list[float] = []
        began = time.time()
        threads = [threading.Thread(target=lambda p=p: (run_job(server, p, language="en"), ends.append(time.time())))
                   for p in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(ends) == len(parts), "a job failed"
        return {"one_job_s": one, "jobs_s": max(ends) - began}


def measure(path: Path, repeat: int, progress: Progress) -> dict[str, list[dict[str, Any]]]:
    calls = {SERVER: lambda: through_server(path),
             **{name: lambda env=env: through_server(path, env) for name, env in OTHER_SETTINGS.items()},
             SEQUENTIAL: lambda: direct(path, "sequential"), BATCHED: lambda: direct(path, "batched")}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in calls}
    for n in range(repeat):
        for name, call in calls.items():
            runs[name].append(call())
            progress.step(f"run {n + 1}/{repeat} {name}: {runs[name][-1]['seconds']:.1f} s")
    return runs


def run(progress: Progress, repeat: int) -> Outcome:
    audio = heldout_file(MINUTES)
    audio_s = audio.placements[-1][2]
    runs = measure(audio.path, repeat, progress)
    seconds = {name: median([r["seconds"] for r in rs]) for name, rs in runs.items()}
    peaks = {name: max(r["peak_mb"] for r in rs) for name, rs in runs.items()}
    wers = {name: median([wer(audio.reference, r["text"]) for r in rs]) for name, rs in runs.items()}
    server_s = seconds[SERVER]
    label = f"{audio_s / 60:.0f}-min held-back MP3"
    rows = [
        Row("local engine", f"{label}: server end to end vs {BATCHED}", f"{server_s:.1f} s ({audio_s / server_s:.0f}× RT)",
            f"{seconds[BATCHED]:.1f} s ({audio_s / seconds[BATCHED]:.0f}× RT)", server_s / seconds[BATCHED],
            "× the batched time", f"≤ {TARGET_VS_BATCHED}×", server_s <= seconds[BATCHED] * TARGET_VS_BATCHED),
        Row("local engine", f"{label}: server end to end vs {SEQUENTIAL}", f"{server_s:.1f} s",
            f"{seconds[SEQUENTIAL]:.1f} s ({audio_s / seconds[SEQUENTIAL]:.0f}× RT)", seconds[SEQUENTIAL] / server_s,
            "× faster"),
        Row("local engine", f"{label}: word error rate, server vs batched (direct)", f"{wers[SERVER]:.3f}",
            f"{wers[BATCHED]:.3f} ({wers[SEQUENTIAL]:.3f})", None, "", f"≤ batched + {TARGET_WER_POINTS:.2f}",
            wers[SERVER] <= wers[BATCHED] + TARGET_WER_POINTS),
        Row("local engine", f"{label}: peak memory, server vs batched (direct)", mb(peaks[SERVER]),
            f"{mb(peaks[BATCHED])} ({mb(peaks[SEQUENTIAL])})", peaks[BATCHED] / peaks[SERVER], "× less",
            f"< {TARGET_MB:.0f} MB", peaks[SERVER] < TARGET_MB),
        *(Row("local engine", f"{label}: {name} vs {BATCHED}; its peak memory, WER",
              f"{seconds[name]:.1f} s; {mb(peaks[name])}; {wers[name]:.3f}",
              f"{seconds[BATCHED]:.1f} s", seconds[name] / seconds[BATCHED], "× the batched time")
          for name in OTHER_SETTINGS),
    ]
    whole, parts = heldout_parts(LOAD_MINUTES, LOAD_JOBS)
    loads = []
    for n in range(repeat):
        loads.append(under_load(whole.path, [p.path for p in parts]))
        progress.step(f"load {n + 1}/{repeat}: one job {loads[-1]['one_job_s']:.1f} s, "
                      f"{LOAD_JOBS} jobs {loads[-1]['jobs_s']:.1f} s")
    one, many = median([x["one_job_s"] for x in loads]), median([x["jobs_s"] for x in loads])
    rows.append(Row("local engine", f"{LOAD_JOBS} concurrent jobs of ~{LOAD_MINUTES / LOAD_JOBS:.0f} min vs the same "
                    f"{LOAD_MINUTES} min as one job", f"{many:.1f} s", f"{one:.1f} s", many / one, "× one job's time",
                    f"≤ {TARGET_LOAD_RATIO}×", many <= one * TARGET_LOAD_RATIO))
    chart = Chart("local_engine", f"{label} on tiny.en int8, median of {repeat}", list(seconds),
                  {"seconds": list(seconds.values())}, "seconds (lower is better)")
    raw = {name: [{k: v for k, v in r.items() if k != "text"} for r in rs] for name, rs in runs.items()}
    return Outcome("local", rows, [chart], {"runs": raw, "wer": wers, "audio_s": audio_s, "load": loads})
