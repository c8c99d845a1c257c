"""A job's audio decoded once: the planning pass writes the samples it measures to a file, and each
chunk is read back from there instead of being decoded from the upload again.

Decoding a chunk from a compressed upload costs an ffmpeg process, a seek with its pre-roll and a
resample, every time: for a 109-minute MP3 in 243 chunks, about 40 CPU seconds on top of the
planning pass, which has already decoded every sample once. The file holds 16 kHz mono 16-bit
samples (32,000 bytes per second of audio, 690 MB for the longest audio accepted; not counted in
the spool's size limit), only while the job runs: the pipeline removes it when the job's run ends,
and the spool clears what a crash left at the next start. A write that fails (a full disk) drops
the file, not the job. A span the file does not hold is decoded from the upload as before: a job
resumed after a restart has a stored plan, so it runs no planning pass and has no file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import structlog

from stt_server.audio.media import sample_span

log = structlog.get_logger(__name__)


class DecodedAudio:
    """The file one planning pass writes (:meth:`writing`, from its decoding thread) while chunk
    decoders read finished spans of it (:meth:`read`, from theirs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples = 0  # written so far, and on disk: a span below this can be read
        self.complete = False  # the whole audio is there (past its end, a span is silence)
        self.given_up = False  # writing failed: every span is decoded from the upload instead
        self._file: IO[bytes] | None = None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Open the file for :meth:`write`; it is complete when the block ends without an error."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
        except OSError as exc:
            self._give_up(exc)
        try:
            yield
        finally:
            if self._file is not None:
                self._file.close()
        self.complete = not self.given_up

    def write(self, block: bytes) -> None:
        """Append whole 16-bit samples; they can be read as soon as this returns. A disk that is full
        (or any write error) only costs the speed-up: the file is dropped, never the job."""
        if self._file is None:
            return
        try:
            self._file.write(block)
            self._file.flush()
        except OSError as exc:
            self._give_up(exc)
            return
        self.samples += len(block) // 2

    def _give_up(self, exc: OSError) -> None:
        log.warning("decoded_audio_dropped", path=self.path.name, error=str(exc))
        self.given_up = True
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self.remove()

    def read(self, start_s: float, end_s: float) -> np.ndarray | None:
        """Float32 samples of [start_s, end_s), exactly as many as :func:`media.extract_pcm` gives for
        the span (silence past the end of the audio); None when the file does not hold the span."""
        first, stop = sample_span(start_s, end_s)
        if self.given_up or (stop > self.samples and not self.complete):
            return None
        out = np.zeros(stop - first, dtype=np.float32)
        have = max(0, min(stop, self.samples) - first)
        if have:
            try:
                held = np.fromfile(self.path, dtype="<i2", count=have, offset=2 * first)
            except FileNotFoundError:
                return None
            out[:len(held)] = held / np.float32(32768.0)
        return out

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
