"""The engine's log-mel features: the same numbers as faster-whisper's extractor, made a block of
frames at a time instead of the whole chunk at once."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from stt_server.audio.media import extract_pcm
from stt_server.engines.log_mel import BLOCK_FRAMES, log_mel
from tests.corpus import require_corpus, speech_files

EXTRACTOR = FeatureExtractor()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """30 s of real speech: corpus clips one after another."""
    require_corpus()
    parts, total = [], 0
    for path in speech_files():
        samples = extract_pcm(path, 0.0, 30.0)
        parts.append(samples)
        total += len(samples)
        if total >= 30 * 16000:
            break
    return np.concatenate(parts)[:30 * 16000]


# lengths around the frame and block edges: none, one sample, one frame short of a window, a
# window, a hop past it, one block, one block and a sample, an odd length, a whole 30 s window
LENGTHS = (0, 1, 159, 160, 399, 400, 560, BLOCK_FRAMES * 160, BLOCK_FRAMES * 160 + 1, 123_457, 480_000)


@pytest.mark.parametrize("length", LENGTHS)
def test_same_features_as_faster_whisper(speech: np.ndarray, length: int) -> None:
    samples = speech[:length]
    ours = log_mel(samples, EXTRACTOR.mel_filters)
    theirs = EXTRACTOR(samples)
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5


def test_small_blocks_give_the_same_features(speech: np.ndarray) -> None:
    whole = log_mel(speech[:80_000], EXTRACTOR.mel_filters, block_frames=10_000)
    # the same arithmetic per frame; only the matrix product's rounding may differ with the block's shape
    assert np.abs(log_mel(speech[:80_000], EXTRACTOR.mel_filters, block_frames=7) - whole).max() < 1e-6


def peak_bytes(make) -> int:  # type: ignore[no-untyped-def]
    """The most memory numpy held at once while ``make()`` ran (numpy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        make()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_30_s_chunk_holds_little_besides_its_features(speech: np.ndarray) -> None:
    result = 80 * 3001 * 4
    ours = peak_bytes(lambda: log_mel(speech, EXTRACTOR.mel_filters))
    theirs = peak_bytes(lambda: EXTRACTOR(speech))
    assert ours < result + 4 * 2**20  # the features and a few megabytes of one block's work
    assert theirs > 5 * ours  # faster-whisper's whole-chunk transform: about 30 MB
