"""Whisper's log-mel spectrogram, made a block of frames at a time.

faster-whisper's ``FeatureExtractor`` frames, windows and transforms the whole chunk at once: 29 MB
at most for a 30 s chunk (tracemalloc), under 1 MB of which is the result. Here the same arithmetic
runs over blocks of frames: 3.8 MB at most, the result included, and the output is the same to
float rounding (the test compares the two on real speech).
"""

from __future__ import annotations

import numpy as np

N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
PADDING = 160  # samples of silence faster-whisper appends before framing
BLOCK_FRAMES = 256
_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float32)


def log_mel(samples: np.ndarray, mel_filters: np.ndarray, block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """``(n_mels, frames)`` float32 log-mel features of 16 kHz ``samples``, as faster-whisper's
    ``FeatureExtractor(samples)`` makes them (``padding`` 160, centred reflect-padded frames,
    the last frame dropped, clamped at 8 below the loudest value, scaled to about [-1, 1])."""
    audio = np.asarray(samples, dtype=np.float32)
    total = len(audio) + PADDING
    frames = total // HOP  # frames kept: one per hop, the last of faster-whisper's dropped
    out = np.empty((mel_filters.shape[0], frames), dtype=np.float32)
    for first in range(0, frames, block_frames):
        last = min(first + block_frames, frames)
        span = _padded(audio, total, first * HOP - N_FFT // 2, (last - 1) * HOP + N_FFT // 2)
        windowed = np.lib.stride_tricks.sliding_window_view(span, N_FFT)[::HOP] * _WINDOW
        spectrum = np.fft.rfft(windowed, n=N_FFT, axis=-1).astype(np.complex64)
        out[:, first:last] = mel_filters @ (np.abs(spectrum.T) ** 2)
    np.log10(np.maximum(out, 1e-10, out=out), out=out)
    if out.size:
        np.maximum(out, out.max() - 8.0, out=out)
    out += 4.0
    out /= 4.0
    return out


def _padded(audio: np.ndarray, total: int, begin: int, end: int) -> np.ndarray:
    """Samples ``begin..end`` of ``audio`` followed by zeros up to ``total`` samples, reflected at both
    ends (numpy's ``reflect`` padding, which the centred frames see)."""
    index = np.arange(begin, end + 1)
    index = np.abs(index)  # reflect at the start
    index = np.where(index > total - 1, 2 * (total - 1) - index, index)  # and at the end
    span = np.zeros(len(index), dtype=np.float32)
    inside = index < len(audio)
    span[inside] = audio[index[inside]]
    return span
