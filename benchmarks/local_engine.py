"""The server end to end on the embedded engine, beside faster-whisper called directly on the whole
file, in one run on one machine; and the server's peak memory for a 10-minute file and a 100 MB MP3.

    .venv/bin/python -m benchmarks.local_engine [--minutes 10] [--mp3-minutes 110] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.serverproc import running_server
from tests.corpus import build_long_audio, wer

INPUTS = Path(tempfile.gettempdir()) / "stt-bench-inputs"

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


def direct(path: Path, beam: int, threads: int = 2) -> dict:
    out = subprocess.run([sys.executable, "-c", DIRECT, str(path), str(beam), str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def through_server(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as data, running_server(Path(data)) as server:
        began = time.perf_counter()
        job = server.submit(path, language="en")
        done = server.wait(job["id"])
        seconds = time.perf_counter() - began
        assert done["status"] == "completed", done
        text = server.get(f"/v1/jobs/{job['id']}/transcript")["text"]
        return {"seconds": seconds, "text": text, "peak_mb": server.peak_rss_mb(),
                "chunks": done["progress"]["chunks_total"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--mp3-minutes", type=float, default=110.0, help="0 to skip the big MP3")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    INPUTS.mkdir(exist_ok=True)
    wav = INPUTS / f"speech-{args.minutes:g}min.wav"
    placed = build_long_audio(wav, min_duration_s=args.minutes * 60)
    reference = " ".join(text for text, _, _ in placed)
    rows = {"server": [], "direct beam=5 (library default)": [], "direct beam=1 (server's decoding)": []}
    for _ in range(args.repeat):
        rows["server"].append(through_server(wav))
        rows["direct beam=5 (library default)"].append(direct(wav, beam=5))
        rows["direct beam=1 (server's decoding)"].append(direct(wav, beam=1))
    audio_s = args.minutes * 60
    server_s = statistics.median(r["seconds"] for r in rows["server"])
    print(f"\n{args.minutes:g}-minute speech file, median of {args.repeat} runs, side by side")
    print(f"{'what':36} {'seconds':>8} {'x real time':>12} {'server speedup':>15} {'peak MB':>8} {'WER':>6}")
    for name, runs in rows.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        print(f"{name:36} {seconds:8.1f} {audio_s / seconds:12.1f} {seconds / server_s:14.2f}x "
              f"{peak:8.0f} {wer(reference, runs[0]['text']):6.3f}")
    if args.mp3_minutes:
        mp3 = INPUTS / f"speech-{args.mp3_minutes:g}min.mp3"
        build_long_audio(mp3, min_duration_s=args.mp3_minutes * 60, fmt="mp3", bitrate="128k")
        big = through_server(mp3)
        print(f"\n{mp3.stat().st_size / 1e6:.0f} MB MP3 ({args.mp3_minutes:g} min): server "
              f"{big['seconds']:.0f} s ({args.mp3_minutes * 60 / big['seconds']:.1f}x real time), "
              f"{big['chunks']} chunks, peak {big['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
