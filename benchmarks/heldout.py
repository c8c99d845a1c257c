"""Held-back real speech: audio that nothing in the project was tuned on.

The corpus in ../shared/corpus is what the tests and the defaults were measured with; a benchmark
that only uses it can flatter the server. This module builds a second input from a source the
project never reads elsewhere: the English prompts of Asterisk's core sounds (Allison Smith's
recorded voice, 16 kHz G.722, CC-BY-SA 3.0, with the text of each prompt), from Debian's
``asterisk-core-sounds-en-g722`` and ``asterisk-core-sounds-en`` packages, downloaded once from the
package registry (``apt-get download``, else deb.debian.org) into the benchmark's input folder.

:func:`heldout_file` strings the prompts together in a fixed shuffled order with pauses of 0.3 to
1.2 s between them (speech with natural pauses, never one clip looped) and says what was said.
About 21 minutes of distinct speech are there; longer files repeat it in another order.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import subprocess
import tarfile
import urllib.request
import wave
from pathlib import Path

import av
import numpy as np

from benchmarks.inputs import INPUTS, LongFile
from tests.corpus import RATE

VERSION = "1.6.1-1"
PACKAGES = {"asterisk-core-sounds-en-g722": "sounds", "asterisk-core-sounds-en": "texts"}
POOL = "http://deb.debian.org/debian/pool/main/a/asterisk-core-sounds/{name}_{version}_all.deb"
SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
TEXTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
BUILD = 1  # bump when the bytes heldout_file writes change


def _deb(name: str, folder: Path) -> Path:
    """The package's .deb, downloaded once: through apt (its configured mirror), else the pool URL."""
    path = folder / f"{name}_{VERSION}_all.deb"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", f"{name}={VERSION}"], cwd=folder, capture_output=True)
    if got.returncode != 0 or not path.exists():
        part = path.with_suffix(".part")
        with urllib.request.urlopen(POOL.format(name=name, version=VERSION), timeout=120) as response:
            part.write_bytes(response.read())
        part.replace(path)
    return path


def _data_tar(deb: Path) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an ar archive), opened in memory."""
    blob = deb.read_bytes()
    assert blob.startswith(b"!<arch>\n"), deb
    at = 8
    while at < len(blob):
        name, size = blob[at:at + 16].decode().strip(), int(blob[at + 48:at + 58].decode().strip())
        body = blob[at + 60:at + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body))
        at += 60 + size + (size & 1)
    raise RuntimeError(f"no data.tar in {deb}")


def _unpack() -> Path:
    """The prompts as 16 kHz mono WAVs plus ``texts.json`` (name → what is said), made once."""
    folder = INPUTS / "heldout"
    done = folder / "texts.json"
    if done.exists():
        return folder
    debs = {role: _deb(name, INPUTS / "debs") for name, role in PACKAGES.items()}
    lines = gzip.decompress(_data_tar(debs["texts"]).extractfile("./" + TEXTS).read()).decode()  # type: ignore[union-attr]
    texts = {}
    for line in lines.splitlines():
        name, sep, text = line.partition(": ")
        # prompts only: no tones ("[beep]"), no comments, no spelt-out letters or lone digits
        if sep and not line.startswith(";") and "[" not in text and len(text.split()) >= 2:
            texts[name.strip()] = re.sub(r"\s+", " ", text).strip()
    folder.mkdir(parents=True, exist_ok=True)
    kept: dict[str, str] = {}
    with _data_tar(debs["sounds"]) as tar:
        for member in tar.getmembers():
            stem = Path(member.name).name.removesuffix(".g722")
            if Path(member.name).parent != Path(SOUNDS) or stem not in texts:
                continue
            samples = _decode_g722(tar.extractfile(member).read())  # type: ignore[union-attr]
            _write_wav(folder / f"{stem}.wav", samples)
            kept[stem] = texts[stem]
    if len(kept) < 100:
        raise RuntimeError(f"only {len(kept)} prompts found in {debs['sounds']}")
    done.write_text(json.dumps(kept, indent=0, sort_keys=True))
    return folder


def _decode_g722(blob: bytes) -> np.ndarray:
    with av.open(io.BytesIO(blob), format="g722") as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]  # type: ignore[union-attr]
    return np.concatenate(frames).astype(np.int16)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype(np.int16).tobytes())


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def prompts() -> list[tuple[Path, str]]:
    """Every held-back prompt: its WAV and what is said in it, sorted by name."""
    folder = _unpack()
    texts = json.loads((folder / "texts.json").read_text())
    return [(folder / f"{name}.wav", texts[name]) for name in sorted(texts)]


def _assemble(minutes: float, seed: int) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The prompts in a shuffled order, 0.3-1.2 s apart, to at least ``minutes``, and what is where."""
    rng = random.Random(seed)
    pool = prompts()
    pieces, placements, cursor = [], [], 0
    while cursor < minutes * 60 * RATE:
        order = pool[:]
        rng.shuffle(order)
        for path, text in order:
            pause = np.zeros(round(rng.uniform(0.3, 1.2) * RATE), dtype=np.int16)
            speech = _read_wav(path)
            pieces += [pause, speech]
            start = cursor + len(pause)
            placements.append((text, start / RATE, (start + len(speech)) / RATE))
            cursor = start + len(speech)
            if cursor >= minutes * 60 * RATE:
                break
    return np.concatenate(pieces), placements


def _write(out: Path, audio: np.ndarray, placements: list[tuple[str, float, float]], fmt: str) -> LongFile:
    part = out.with_name(out.name + ".part")
    if fmt == "wav":
        _write_wav(part, audio)
    else:
        from stt_server.audio.media import ffmpeg_exe

        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "s16le", "-ar", str(RATE),
                        "-ac", "1", "-i", "pipe:0", "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3", str(part)],
                       input=audio.tobytes(), check=True)
    part.replace(out)
    out.with_name(out.name + ".json").write_text(json.dumps({"build": BUILD, "placements": placements}))
    return LongFile(out, len(audio) / RATE / 60, placements)  # type: ignore[arg-type]


def _cached(out: Path) -> LongFile | None:
    sidecar = out.with_name(out.name + ".json")
    if out.exists() and sidecar.exists() and json.loads(sidecar.read_text()).get("build") == BUILD:
        placed = [tuple(p) for p in json.loads(sidecar.read_text())["placements"]]
        return LongFile(out, placed[-1][2] / 60 if placed else 0.0, placed)  # type: ignore[arg-type]
    return None


def heldout_file(minutes: float, fmt: str = "mp3", seed: int = 14) -> LongFile:
    """``heldout-<minutes>min.<fmt>``: the prompts in a shuffled order, 0.3-1.2 s apart, to at least
    ``minutes`` (MP3 at 64 kbit/s, or 16-bit WAV). Written once; the placements say what is where."""
    INPUTS.mkdir(parents=True, exist_ok=True)
    out = INPUTS / f"heldout-{minutes:g}min-s{seed}.{fmt}"
    return _cached(out) or _write(out, *_assemble(minutes, seed), fmt)


def heldout_parts(minutes: float, parts: int, fmt: str = "mp3", seed: int = 15) -> tuple[LongFile, list[LongFile]]:
    """One held-back file of ``minutes`` and the same audio cut into ``parts`` files (in pauses between
    prompts, near equal lengths): the same work as one job or as several."""
    INPUTS.mkdir(parents=True, exist_ok=True)
    whole = INPUTS / f"heldout-{minutes:g}min-s{seed}.{fmt}"
    names = [INPUTS / f"heldout-{minutes:g}min-s{seed}-part{n + 1}of{parts}.{fmt}" for n in range(parts)]
    cached = [_cached(p) for p in (whole, *names)]
    if all(cached):
        return cached[0], cached[1:]  # type: ignore[return-value]
    audio, placements = _assemble(minutes, seed)
    total = len(audio) / RATE
    cuts, pieces = [0], []
    for n in range(1, parts):
        target = total * n / parts  # the middle of the first pause after the nominal cut
        after = next(i for i, (_, start, _) in enumerate(placements) if start >= target)
        cuts.append(round((placements[after - 1][2] + placements[after][1]) / 2 * RATE))
    cuts.append(len(audio))
    for n, path in enumerate(names):
        lo, hi = cuts[n] / RATE, cuts[n + 1] / RATE
        placed = [(t, a - lo, b - lo) for t, a, b in placements if lo <= a < hi]
        pieces.append(_write(path, audio[cuts[n]:cuts[n + 1]], placed, fmt))
    return _write(whole, audio, placements, fmt), pieces


if __name__ == "__main__":
    made = heldout_file(10)
    print(made.path, f"{made.placements[-1][2]:.1f} s, {len(made.placements)} prompts")
