"""(a) The embedded engine: the server end to end beside faster-whisper called directly on the whole file.

Same model (tiny.en, int8), same machine, same run. The direct call runs in its own process
with the library's defaults (beam 5) and with the server's decoding (beam 1), 2 threads each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.client import local_server, run_job
from benchmarks.harness import Chart, Outcome, Progress, Row, mb, median
from benchmarks.inputs import LongFile, long_file
from benchmarks.scenario_memory import TARGET_MB
from tests.corpus import wer

MINUTES = 10
TARGET_SPEEDUP = 1.1

DIRECT = """
import json, resource, sys, time
from faster_whisper import WhisperModel
from stt_server.engines.local import resolve_model
path, beam, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
began = time.perf_counter()
model = WhisperModel(resolve_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=threads)
segments, info = model.transcribe(path, beam_size=beam, language="en")
text = " ".join(s.text.strip() for s in segments)
print(json.dumps({"seconds": time.perf_counter() - began, "text": text,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PER_CLIP = """
import json
from faster_whisper import WhisperModel
from stt_server.engines.local import resolve_model
from tests.corpus import references, speech_files
model = WhisperModel(resolve_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=2)
pairs = [(references()[p.name], " ".join(s.text.strip() for s in model.transcribe(str(p), language="en")[0]))
         for p in speech_files()]
print(json.dumps(pairs))
"""

SERVER = "server (end to end)"
DIRECT_BEAM5 = "direct, beam 5 (library default)"
DIRECT_BEAM1 = "direct, beam 1 (server's decoding)"


def direct(path: Path, beam: int, threads: int = 2) -> dict[str, Any]:
    """faster-whisper on the whole file in a fresh process: seconds (model load included), text, peak MB."""
    out = subprocess.run([sys.executable, "-c", DIRECT, str(path), str(beam), str(threads)],
                         capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def per_clip_wer() -> float:
    """faster-whisper with its defaults on each corpus clip alone: the accuracy the server must keep."""
    out = subprocess.run([sys.executable, "-c", PER_CLIP], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    pairs = json.loads(out.stdout)
    return wer(" ".join(r for r, _ in pairs), " ".join(h for _, h in pairs))


def through_server(path: Path) -> dict[str, Any]:
    """A fresh server (model loaded before the clock starts): seconds from POST to done, text, peak MB."""
    with tempfile.TemporaryDirectory(prefix="bench-local-") as data, local_server(Path(data)) as server:
        done = run_job(server, path, language="en")
        text = server.get(f"/v1/jobs/{done['id']}/transcript")["text"]
        return {"seconds": done["seconds"], "text": text, "peak_mb": server.peak_rss_mb(),
                "chunks": done["progress"]["chunks_total"]}


def measure(audio: LongFile, repeat: int, progress: Progress) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {SERVER: [], DIRECT_BEAM5: [], DIRECT_BEAM1: []}
    for n in range(repeat):
        for name, call in ((SERVER, lambda: through_server(audio.path)),
                           (DIRECT_BEAM5, lambda: direct(audio.path, beam=5)),
                           (DIRECT_BEAM1, lambda: direct(audio.path, beam=1))):
            runs[name].append(call())
            progress.step(f"run {n + 1}/{repeat} {name}: {runs[name][-1]['seconds']:.1f} s")
    return runs


def run(progress: Progress, repeat: int) -> Outcome:
    audio = long_file(MINUTES)
    runs = measure(audio, repeat, progress)
    audio_s = MINUTES * 60
    seconds = {name: median([r["seconds"] for r in rs]) for name, rs in runs.items()}
    peaks = {name: max(r["peak_mb"] for r in rs) for name, rs in runs.items()}
    wers = {name: wer(audio.reference, rs[0]["text"]) for name, rs in runs.items()}
    server_s = seconds[SERVER]
    rows = [Row("local engine", f"{MINUTES}-min WAV: server end to end vs {name}",
                f"{server_s:.1f} s ({audio_s / server_s:.0f}× real time)",
                f"{seconds[name]:.1f} s ({audio_s / seconds[name]:.0f}× real time)", seconds[name] / server_s,
                "× faster", f"≥ {TARGET_SPEEDUP}×", seconds[name] / server_s >= TARGET_SPEEDUP)
            for name in (DIRECT_BEAM5, DIRECT_BEAM1)]
    rows.append(Row("local engine", f"{MINUTES}-min WAV: peak memory, server vs direct beam 5", mb(peaks[SERVER]),
                    mb(peaks[DIRECT_BEAM5]), peaks[DIRECT_BEAM5] / peaks[SERVER], "× less", f"< {TARGET_MB:.0f} MB",
                    peaks[SERVER] < TARGET_MB))
    # The target compares with each clip transcribed alone. A whole-file call on this file (the corpus
    # repeated) conditions on its own earlier text, which here is the same sentences again: shown, not
    # a fair bar.
    clips = per_clip_wer()
    rows.append(Row("local engine", f"{MINUTES}-min WAV: word error rate, server vs direct on each clip alone",
                    f"{wers[SERVER]:.3f}", f"{clips:.3f}", None, "", "≤ direct + 0.02",
                    wers[SERVER] <= clips + 0.02))
    rows.append(Row("local engine", f"{MINUTES}-min WAV: word error rate, direct on the whole file (beam 5, 1)",
                    f"{wers[DIRECT_BEAM5]:.3f}, {wers[DIRECT_BEAM1]:.3f}", f"server {wers[SERVER]:.3f}",
                    None, ""))
    chart = Chart("local_engine", f"{MINUTES}-min WAV on tiny.en int8, median of {repeat}", list(seconds),
                  {"seconds": list(seconds.values())}, "seconds (lower is better)")
    raw = {name: [{k: v for k, v in r.items() if k != "text"} for r in rs] for name, rs in runs.items()}
    return Outcome("local", rows, [chart], {"runs": raw, "wer": wers, "audio_s": audio_s})
