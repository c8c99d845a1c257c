"""What an upload format's encoder settings cost in CPU and in words: ``python -m benchmarks.upload_accuracy``.

For WAV, FLAC, MP3 at 32 kb/s and each Opus setting in :data:`CANDIDATES` (32 kb/s, in Ogg), as a
remote upstream gets them:

- CPU seconds per 30 s chunk: ``encode_upload`` in one ffmpeg run (process start, the PCM piped
  in, the codec) or in-process (PyAV), the median of ``--repeat`` runs on one chunk of speech, as
  the CPU time of this process and its children. The chunk's decode from the 109-min MP3 the wire
  benchmark sends (``extract_pcm``) and a bare ffmpeg start are measured the same way, for scale.
- The event loop's longest stall while two threads encode chunks (the server encodes in up to one
  thread per core), for the server's Opus settings in-process and in an ffmpeg run.
- tiny.en's word error rate (faster-whisper, int8, 2 threads, beam 1, English, the embedded
  engine's decoding options) on audio decoded back from exactly the bytes ``encode_upload`` would
  send: the held-back speech (:mod:`benchmarks.heldout`, cut into windows of at most 30 s in the
  middle of its pauses, as the planner cuts; 1,247 words, so one word is 0.08 points) and the
  corpus clips (each one whole; 117 words, one word is 0.85 points).

The machine may be shared: CPU figures are medians, and the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.heldout import heldout_file
from benchmarks.inputs import long_file
from stt_server.audio.media import SAMPLE_RATE, encode_upload, extract_pcm, ffmpeg_exe
from stt_server.audio.upload_format import UploadFormat
from tests.corpus import references, speech_files, wer

OPUS = UploadFormat("opus", 32_000)
CVBR = ("-vbr", "constrained")
C0_60MS = (*CVBR, "-compression_level", "0", "-frame_duration", "60")


@dataclass(frozen=True)
class Setting:
    """A format and its encoder settings (None: the format's own, what the server sends)."""

    format: UploadFormat
    options: tuple[str, ...] | None = None
    in_process: bool | None = False  # None: the format's own way; False: one ffmpeg run

    def encode(self, samples: np.ndarray) -> bytes:
        return encode_upload(samples, self.format, options=self.options, in_process=self.in_process)


CANDIDATES: dict[str, Setting] = {
    "wav (in-process)": Setting(UploadFormat("wav")),
    "flac": Setting(UploadFormat("flac")),
    "mp3 32 kb/s": Setting(UploadFormat("mp3", 32_000)),
    "opus 32 kb/s, the server's settings": Setting(OPUS, in_process=None),
    "opus complexity 10 (libopus default)": Setting(OPUS, CVBR),
    "opus complexity 10, voip": Setting(OPUS, (*CVBR, "-application", "voip")),
    "opus complexity 10, 60 ms frames": Setting(OPUS, (*CVBR, "-frame_duration", "60")),
    "opus complexity 10, unconstrained vbr": Setting(OPUS, ("-vbr", "on")),
    "opus complexity 6": Setting(OPUS, (*CVBR, "-compression_level", "6")),
    "opus complexity 0": Setting(OPUS, (*CVBR, "-compression_level", "0")),
    "opus complexity 0, voip": Setting(OPUS, (*CVBR, "-compression_level", "0", "-application", "voip")),
    "opus complexity 0, 40 ms frames": Setting(OPUS, (*CVBR, "-compression_level", "0", "-frame_duration", "40")),
    "opus complexity 0, 60 ms frames": Setting(OPUS, C0_60MS),
    "opus complexity 0, 60 ms frames, PyAV": Setting(OPUS, C0_60MS, in_process=True),
    "opus complexity 10, PyAV": Setting(OPUS, CVBR, in_process=True),
}
MAX_WINDOW_S = 30.0


@dataclass(frozen=True)
class Window:
    """A stretch of audio and what is said in it."""

    samples: np.ndarray
    text: str


def _cpu() -> float:
    """CPU seconds of this process (all its threads) and of its waited-for children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def cpu_of(work: Callable[[], object], repeat: int) -> float:
    """Median CPU seconds ``work()`` took, in this process and in the processes it ran, over ``repeat`` runs."""
    spent = []
    for _ in range(repeat):
        before = _cpu()
        work()
        spent.append(_cpu() - before)
    return statistics.median(spent)


async def _loop_lag(work: Callable[[], object], threads: int, runs: int) -> float:
    """The longest an event loop's 1 ms sleep overran while ``threads`` threads each ran ``work`` ``runs`` times."""
    async def one() -> None:
        for _ in range(runs):
            await asyncio.to_thread(work)

    tasks = [asyncio.create_task(one()) for _ in range(threads)]
    worst = 0.0
    while not all(t.done() for t in tasks):
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - began - 0.001)
    await asyncio.gather(*tasks)
    return worst


def loop_lag(work: Callable[[], object], threads: int = 2, runs: int = 10) -> float:
    return asyncio.run(_loop_lag(work, threads, runs))


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        rate, frames = w.getframerate(), w.getnframes()
    return extract_pcm(path, 0.0, frames / rate)


def heldout_windows(minutes: float) -> list[Window]:
    """The held-back file cut in the middle of pauses into windows of at most 30 s."""
    made = heldout_file(minutes, "wav")
    audio = _read_wav(made.path)
    spans = [(start, end) for _, start, end in made.placements]
    # a cut in the middle of each pause, and the last at the end of the audio
    cuts = [(end + nxt[0]) / 2 for (_, end), nxt in zip(spans, spans[1:])] + [len(audio) / SAMPLE_RATE]
    windows, start, texts = [], 0.0, []
    for i, (text, _, _) in enumerate(made.placements):
        texts.append(text)
        if i + 1 == len(cuts) or cuts[i + 1] - start > MAX_WINDOW_S:  # the next prompt would not fit
            windows.append(Window(audio[round(start * SAMPLE_RATE):round(cuts[i] * SAMPLE_RATE)], " ".join(texts)))
            start, texts = cuts[i], []
    return windows


def corpus_windows() -> list[Window]:
    refs = references()
    return [Window(_read_wav(path), refs[path.name]) for path in speech_files()]


def roundtrip(samples: np.ndarray, setting: Setting) -> tuple[np.ndarray, int]:
    """``samples`` decoded back from what would be uploaded (16 kHz mono, as a server decodes it), and its size."""
    data = setting.encode(samples)
    out = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0",
                          "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"],
                         input=data, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<i2").astype(np.float32) / 32768.0, len(data)


def transcribe(model, samples: np.ndarray) -> str:  # type: ignore[no-untyped-def]
    """The embedded engine's decoding options, beam 1, English. A window whose greedy decoding fails
    the model's checks is decoded again at a higher temperature, by sampling, from a fixed seed; even
    so the same samples can come out a word apart from one call to the next (WAV and FLAC, which
    decode to the same samples, show it)."""
    import ctranslate2

    ctranslate2.set_random_seed(0)
    segments, _ = model.transcribe(samples, language="en", beam_size=1, best_of=1,
                                   temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                   condition_on_previous_text=False, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def score(model, windows: list[Window], setting: Setting) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Pooled WER over ``windows`` and bytes per audio second of the uploads."""
    hyps, size, seconds = [], 0, 0.0
    for window in windows:
        back, n = roundtrip(window.samples, setting)
        hyps.append(transcribe(model, back))
        size += n
        seconds += len(window.samples) / SAMPLE_RATE
    return wer(" ".join(w.text for w in windows), " ".join(hyps)), size / seconds


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10, help="length of the held-back file")
    parser.add_argument("--repeat", type=int, default=7, help="runs per CPU figure (the median is kept)")
    parser.add_argument("--only", nargs="*", help="settings whose names contain one of these words")
    parser.add_argument("--no-wer", action="store_true", help="CPU figures only")
    args = parser.parse_args(argv)
    chosen = {name: setting for name, setting in CANDIDATES.items()
              if not args.only or name.startswith("wav") or any(word in name for word in args.only)}
    print(f"load average (1, 5, 15 min): {load()}", flush=True)

    mp3 = long_file(110, "mp3").path
    chunk = extract_pcm(mp3, 600.0, 630.0)
    null = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
            "-t", "0.01", "-f", "null", "-"]
    print(f"\nCPU seconds per 30 s chunk (median of {args.repeat}; one ffmpeg run unless PyAV is named), bytes per second:", flush=True)
    print(f"  {'ffmpeg start, nothing done':42s} {cpu_of(lambda: subprocess.run(null, check=True), args.repeat):.3f}")
    print(f"  {'decode 30 s of the 128 kb/s MP3':42s} {cpu_of(lambda: extract_pcm(mp3, 600.0, 630.0), args.repeat):.3f}")
    for name, setting in chosen.items():
        cpu = cpu_of(lambda: setting.encode(chunk), args.repeat)
        print(f"  {name:42s} {cpu:.3f}  {len(setting.encode(chunk)) / 30:7,.0f}", flush=True)
    print("\nThe event loop's longest stall while two threads encode 10 chunks each (a 1 ms sleep's overrun):")
    for name, setting in chosen.items():
        if setting.format.name == "opus" and setting.options in (None, C0_60MS):
            print(f"  {name:42s} {loop_lag(lambda: setting.encode(chunk)) * 1000:5.1f} ms", flush=True)
    print(f"load average: {load()}", flush=True)
    if args.no_wer:
        return

    from faster_whisper import WhisperModel

    from stt_server.engines.local import resolve_model

    model = WhisperModel(resolve_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=2)
    held, corpus = heldout_windows(args.minutes), corpus_windows()
    held_s = sum(len(w.samples) for w in held) / SAMPLE_RATE
    corpus_s = sum(len(w.samples) for w in corpus) / SAMPLE_RATE
    print(f"\ntiny.en WER on audio decoded from the upload: held-back {held_s / 60:.1f} min in {len(held)} "
          f"windows, corpus {corpus_s:.0f} s in {len(corpus)} clips", flush=True)
    print(f"  {'setting':42s} {'held-back':>9s} {'corpus':>7s} {'B/s':>7s}")
    for name, setting in chosen.items():
        held_wer, rate = score(model, held, setting)
        corpus_wer, _ = score(model, corpus, setting)
        print(f"  {name:42s} {held_wer:9.2%} {corpus_wer:7.2%} {rate:7,.0f}", flush=True)
    print(f"load average: {load()}", flush=True)


if __name__ == "__main__":
    main()
