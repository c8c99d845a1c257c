"""Audio I/O: probe a file, measure its loudness, and extract chunks — all streaming.

Nothing here decodes a whole file into memory: `probe` seeks, `energy_envelope`
folds ffmpeg's output block by block into one number per frame (and can hand
the same blocks to a file, see `stt_server.audio.decoded`), and `extract_pcm`
decodes only the span asked for. Every function is blocking;
callers run each one in a single `asyncio.to_thread` hop.

Only local files are accepted. Paths are made absolute before they reach
FFmpeg (so `pipe:`, `concat:` and friends are never read as protocols), PyAV
and the ffmpeg binary are limited to the `file` protocol and to the demuxers
of plain audio containers (`AUDIO_DEMUXERS`: never playlists, concat lists or
image sequences, which open other files or URLs on the uploader's behalf), and
`probe`, which callers run first, checks the demuxer it got against that list.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

import av
import numpy as np
import structlog

from stt_server.errors import InvalidAudio
from stt_server.audio.upload_format import UploadFormat

log = structlog.get_logger(__name__)

SAMPLE_RATE = 16_000
"""Rate of every PCM array this module returns (what Whisper expects)."""

DB_FLOOR = -100.0
READ_BLOCK = 64 * 1024

TAIL_SEEK_S = 1.5
"""How far before the declared end `probe` seeks to prove the end is really there."""
TAIL_TOLERANCE_S = 1.0
"""How much short of the declared end the last decodable audio may stop."""

MIN_RATE, MAX_RATE = 8_000, 384_000
"""Sample rates accepted: a rate of 1 Hz makes 4 KB last an hour; billions of Hz break decoders."""

UNDECODABLE = "the audio cannot be decoded"
"""What a user is told when a decoder fails; the decoder's own words (paths, addresses) go to the log."""

PREROLL_SAMPLES = SAMPLE_RATE // 4
"""Decoded and dropped before each span: MP3 (bit reservoir, overlapped MDCT) and
AAC decoders emit ~100 ms of garbage right after a seek until their state fills."""

# The only demuxers FFmpeg may use: plain audio containers (video streams in them are never decoded).
# "mov" covers mp4/m4a/3gp, "matroska" covers webm; "mpeg" and "w64" because OpenAI's API takes them.
AUDIO_DEMUXERS = frozenset({"wav", "w64", "mp3", "flac", "ogg", "mov", "mp4", "m4a", "matroska", "webm",
                            "aac", "amr", "aiff", "caf", "mpeg"})
_FORMAT_WHITELIST = ",".join(sorted(AUDIO_DEMUXERS))
_ACCEPTED = "wav, mp3, flac, ogg/opus, m4a/mp4/mov, webm/mkv, aac, amr, aiff, caf, w64 or mpeg"

_FFMPEG_SAFETY = ("-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file,pipe",
                  "-format_whitelist", _FORMAT_WHITELIST)


@dataclass(frozen=True)
class AudioInfo:
    """What `probe` learned about a file without decoding it."""

    duration_s: float
    codec: str
    sample_rate: int
    channels: int
    format_name: str


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _local_path(path: str | Path) -> str:
    """The absolute path of an existing regular file; anything else is refused."""
    text = os.fspath(path)
    if "://" in text:
        raise InvalidAudio("only local files are accepted, not URLs")
    p = Path(text).absolute()
    if not p.is_file():
        raise InvalidAudio(f"no such file: {p.name}")
    return str(p)


# --------------------------------------------------------------------------- probe


def probe(path: str | Path) -> AudioInfo:
    """Describe an audio file, proving its first frame and its end both decode.

    Raises `InvalidAudio` for empty, non-audio, audio-less, zero-length,
    unknown-length and truncated files. Costs a few milliseconds whatever the
    file's size: it seeks instead of decoding everything.
    """
    local = _local_path(path)
    size = os.path.getsize(local)
    if size == 0:
        raise InvalidAudio("the file is empty")
    try:
        # fastseek: MP3 seeks by its header or table of contents instead of reading
        # the whole file up to the target (100+ ms on a 100 MB MP3).
        container = av.open(local, options={"protocol_whitelist": "file", "format_whitelist": _FORMAT_WHITELIST,
                                            "fflags": "fastseek"})
    except (av.FFmpegError, OSError, ValueError) as err:
        raise InvalidAudio(f"not a recognised audio file: send {_ACCEPTED}") from err
    with container:
        try:
            return _probe_container(container, local, size)
        except (av.FFmpegError, OSError, ValueError) as err:
            log.info("probe_failed", error_type=type(err).__name__, detail=str(err)[:500])
            raise InvalidAudio(UNDECODABLE) from err


def _probe_container(container: av.container.InputContainer, local: str, size: int) -> AudioInfo:
    format_name = container.format.name
    if not set(format_name.split(",")) & AUDIO_DEMUXERS:  # the whitelist did this already: belt and braces
        raise InvalidAudio(f"{format_name} files are not accepted: send {_ACCEPTED}")
    if not container.streams.audio:
        raise InvalidAudio("the file contains no audio stream")
    stream = container.streams.audio[0]
    rate = int(stream.codec_context.sample_rate or stream.rate or 0)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidAudio(f"a sample rate of {rate} Hz is not accepted: send {MIN_RATE}–{MAX_RATE} Hz audio")
    held = _check_wav(local, size) if format_name == "wav" else None
    duration = _duration_s(container, stream)
    if duration is None:
        raise InvalidAudio("the audio's duration is unknown")
    if duration <= 0:
        raise InvalidAudio("the audio has zero duration")
    if held is not None and duration > held + TAIL_TOLERANCE_S:
        raise InvalidAudio(f"the WAV header declares {duration:.1f} s of audio but its data holds {held:.1f} s")
    if _first_frame(container, stream) is None:
        raise InvalidAudio("the file contains no decodable audio")
    end = _decoded_end_s(container, stream, duration)
    if end is None or end < duration - TAIL_TOLERANCE_S:
        got = "nothing decodes near its end" if end is None else f"it decodes only to {end:.1f} s"
        raise InvalidAudio(f"the file is truncated: it declares {duration:.1f} s of audio but {got}")
    ctx = stream.codec_context
    return AudioInfo(
        duration_s=duration,
        codec=ctx.name,
        sample_rate=int(ctx.sample_rate or stream.rate or 0),
        channels=int(ctx.channels or 0),
        format_name=format_name,
    )


def _check_wav(local: str, size: int) -> float | None:
    """Refuse a cut or empty WAV; return how long its PCM data lasts (None: not PCM, or not RIFF).

    The bytes present say how long PCM lasts, whatever the header's byte-rate field claims."""
    span = _wav_data_bytes(local, size)
    if span is None:
        return None
    declared, present, bytes_per_s = span
    if declared is not None and declared > present:
        raise InvalidAudio(f"the file is truncated: the WAV header declares {declared} bytes of audio "
                           f"but only {present} are present")
    if present == 0:
        raise InvalidAudio("the audio has zero duration")
    return min(present, declared or present) / bytes_per_s if bytes_per_s else None


def _duration_s(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if container.duration is not None:
        return container.duration / av.time_base
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _first_frame(container: av.container.InputContainer,
                 stream: av.audio.stream.AudioStream) -> av.AudioFrame | None:
    for frame in container.decode(stream):
        return frame
    return None


def _decoded_end_s(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                   duration: float) -> float | None:
    """Seek to just before the declared end and return where decodable audio stops.

    Packets are demuxed (cheap) from wherever the seek lands — a table of
    contents may put it well before the target — and only those near the end
    are decoded. A seek the demuxer refuses falls back to a scan from the start.
    """
    decode_from = duration - TAIL_SEEK_S - 1.0
    try:
        container.seek(int(max(0.0, duration - TAIL_SEEK_S) * av.time_base))
    except av.FFmpegError:
        container.seek(0)
    end: float | None = None
    for packet in container.demux(stream):
        at = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else None
        if at is not None and at < decode_from:
            continue
        for frame in packet.decode():
            start = frame.time if frame.time is not None else at
            if start is not None and frame.sample_rate:
                end = start + frame.samples / frame.sample_rate
    return end


PCM_TAGS = (1, 3, 0xFFFE)  # integer PCM, float PCM, WAVE_FORMAT_EXTENSIBLE


def _wav_data_bytes(local: str, size: int) -> tuple[int | None, int, int] | None:
    """(declared, present, bytes per second) of a RIFF WAV's `data` chunk; None if not found.

    FFmpeg silently clamps a WAV's duration to the bytes present, so a cut WAV
    looks whole to PyAV; only the header tells. Streaming writers put 0 or
    0xFFFFFFFF in the size field, meaning "until the end": declared is None then.
    Bytes per second come from the `fmt ` chunk's rate, channels and sample
    width (0 when it is not PCM), not from its byte-rate field, which may lie.
    """
    bytes_per_s = 0
    with open(local, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64, W64 and friends: not checked here
        while len(chunk := f.read(8)) == 8:
            tag, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if tag == b"data":
                declared = None if length in (0, 0xFFFFFFFF) else length
                return declared, max(0, size - f.tell()), bytes_per_s
            if tag == b"fmt " and length >= 16:
                fmt = f.read(16)
                tag_id, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt)
                if tag_id in PCM_TAGS:
                    bytes_per_s = rate * channels * ((bits + 7) // 8)
                length -= 16
            f.seek(length + (length & 1), io.SEEK_CUR)
    return None


# --------------------------------------------------------------------------- ffmpeg


class _Decoder:
    """ffmpeg decoding a local file to raw PCM on stdout, killed at a deadline.

    Use as a context manager around reading `blocks()`: leaving normally reaps
    ffmpeg and raises `InvalidAudio` if it failed or timed out; leaving by an
    exception kills it and lets the exception through.
    """

    def __init__(self, args: list[str], timeout_s: float) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # a file, so a chatty ffmpeg never blocks
        self.proc = subprocess.Popen([ffmpeg_exe(), *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        self.timed_out = False
        self._timer = threading.Timer(timeout_s, self._kill)
        self._timer.daemon = True
        self._timer.start()

    def _kill(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def blocks(self) -> Iterator[bytes]:
        """ffmpeg's 16-bit output as it comes, in blocks of whole samples (a byte split off is held back
        for the next block)."""
        assert self.proc.stdout is not None
        pending = b""
        while block := self.proc.stdout.read(READ_BLOCK):
            block, pending = pending + block, b""
            if len(block) % 2:
                block, pending = block[:-1], block[-1:]
            yield block

    def __enter__(self) -> _Decoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.proc.kill()
        code = self.proc.wait()  # the timer still bounds this wait
        self._timer.cancel()
        self._stderr.seek(0)
        message = self._stderr.read(2000).decode("utf-8", "replace").strip()
        self._stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if exc_type is not None:
            return
        if self.timed_out:
            raise InvalidAudio("decoding the audio took too long")
        if code != 0:
            log.warning("ffmpeg_failed", exit_code=code, detail=message[:500])
            raise InvalidAudio(UNDECODABLE)


def _decode_args(local: str, rate: int, seek: tuple[float, float] | None = None) -> list[str]:
    args = list(_FFMPEG_SAFETY)
    if seek is not None:
        args += ["-ss", f"{seek[0]:.6f}"]
    args += ["-i", local]
    if seek is not None:
        args += ["-t", f"{seek[1]:.6f}"]
    return args + ["-vn", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-"]


def energy_envelope(path: str | Path, frame_s: float = 0.05, timeout_s: float = 600) -> np.ndarray:
    """RMS level in dBFS of each `frame_s` of the file's audio (float32, floored at -100).

    Memory is one number per frame plus one read block: ffmpeg's output is
    folded into frame energies as it streams past. A trailing partial frame
    counts as a frame.
    """
    levels = list(envelope_blocks(path, frame_s, timeout_s))
    return np.concatenate(levels) if levels else np.empty(0, dtype=np.float32)


def envelope_blocks(path: str | Path, frame_s: float = 0.05, timeout_s: float = 600,
                    sink: Callable[[bytes], None] | None = None) -> Iterator[np.ndarray]:
    """:func:`energy_envelope` as it is decoded: successive runs of frame levels (float32), so a
    planner can start on the beginning of a long file while the rest is still being read.

    The levels are measured on the samples chunks are made of (16 kHz mono). ``sink`` gets those
    samples too (16-bit little-endian, whole samples only), each block before the levels it gives
    are yielded, so whatever is planned from the levels can already be read back from the sink."""
    local = _local_path(path)
    frame_len = max(1, round(frame_s * SAMPLE_RATE))
    carry = np.empty(0, dtype=np.float64)
    with _Decoder(_decode_args(local, SAMPLE_RATE), timeout_s) as decoder:
        for block in decoder.blocks():
            if sink is not None:
                sink(block)
            samples = np.concatenate([carry, np.frombuffer(block, dtype="<i2").astype(np.float64)])
            whole = len(samples) - len(samples) % frame_len
            if whole:
                yield _frame_db(samples[:whole].reshape(-1, frame_len)).astype(np.float32)
            carry = samples[whole:]
    if len(carry):
        yield _frame_db(carry.reshape(1, -1)).astype(np.float32)


def _frame_db(frames: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(frames / 32768.0), axis=1)) if frames.size else np.empty(0)
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(rms)
    return np.maximum(db, DB_FLOOR)


def sample_span(start_s: float, end_s: float) -> tuple[int, int]:
    """The first sample of [start_s, end_s) and the one after its last, at 16 kHz: rounded the same
    way wherever a span is cut, so consecutive spans tile the audio."""
    first, stop = round(start_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE)
    if first < 0 or stop < first:
        raise ValueError(f"bad span [{start_s}, {end_s})")
    return first, stop


def extract_pcm(path: str | Path, start_s: float, end_s: float, timeout_s: float = 120) -> np.ndarray:
    """Float32 mono 16 kHz samples of [start_s, end_s), decoding only that span.

    The result has exactly round(end_s*16000) - round(start_s*16000) samples
    (zero-padded past the end of the audio), so consecutive spans tile the
    file with no sample lost or repeated.
    """
    local = _local_path(path)
    first, stop = sample_span(start_s, end_s)
    count = stop - first
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    preroll = min(first, PREROLL_SAMPLES)
    # Ask for a little more than needed, then trim: ffmpeg's -t may round down by a sample.
    span = ((first - preroll) / SAMPLE_RATE, (preroll + count + 160) / SAMPLE_RATE)
    out = np.zeros(count, dtype=np.float32)
    skip, filled = preroll, 0
    with _Decoder(_decode_args(local, SAMPLE_RATE, span), timeout_s) as decoder:
        for block in decoder.blocks():
            samples = np.frombuffer(block, dtype="<i2")
            dropped = min(skip, len(samples))
            samples, skip = samples[dropped:], skip - dropped
            take = min(len(samples), count - filled)
            if take > 0:
                out[filled:filled + take] = samples[:take] / np.float32(32768.0)
                filled += take
    return out


# --------------------------------------------------------------------------- PCM helpers


def int16_pcm(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) to int16, exact for samples that came from int16; int16 passes through,
    so a caller converts once for the hash and the uploads (each function below takes either).

    Float32 is scaled in float32: times 32768 is exact in either width, so it rounds as float64 would,
    at half the memory traffic (this runs for every chunk's hash and upload).
    """
    x = np.asarray(samples)
    if x.dtype == np.int16:
        return x
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    scaled = np.rint(x * x.dtype.type(32768.0))
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype("<i2")


def pcm_to_wav(samples: np.ndarray) -> bytes:
    """A 16-bit PCM, 16 kHz, mono WAV file holding `samples`."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(int16_pcm(samples).tobytes())
    return buf.getvalue()


def pcm_sha256(samples: np.ndarray) -> str:
    """Hex sha256 of the samples (float32, or int16 as :func:`int16_pcm` gives) as int16 little-endian
    bytes: a chunk's content key."""
    return hashlib.sha256(int16_pcm(samples).tobytes()).hexdigest()


def encode_upload(samples: np.ndarray, fmt: UploadFormat, timeout_s: float = 120,
                  options: tuple[str, ...] | None = None, in_process: bool | None = None) -> bytes:
    """`samples` (float32 mono 16 kHz, or int16 as :func:`int16_pcm` gives) as a file in `fmt`: WAV
    in-process, Opus by PyAV in-process, the others by one ffmpeg run. Bit-exact: the same samples always give the same bytes.

    ``options`` and ``in_process``: encoder settings and the way of encoding in place of the format's
    own (:class:`Container`), for measuring others.
    """
    if fmt.name == "wav":
        return pcm_to_wav(samples)
    kind = fmt.kind
    options = kind.options if options is None else options
    if kind.in_process if in_process is None else in_process:
        return _encode_in_process(samples, fmt, options)
    codec = ["-c:a", kind.codec, *(["-b:a", str(fmt.bitrate)] if fmt.bitrate else []), *options]
    # To a file, not a pipe: the MP3 and FLAC muxers seek back to finish their headers (the encoder
    # delay a decoder trims, the total length); on a pipe an MP3 would start 70 ms late.
    with tempfile.TemporaryDirectory(prefix="stt-encode-") as tmp:
        out = os.path.join(tmp, kind.filename)
        try:
            done = subprocess.run(
                [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar",
                 str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", *codec, "-fflags", "+bitexact", "-f", kind.container,
                 "-y", out],
                input=int16_pcm(samples).tobytes(), capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"encoding a chunk as {fmt.spec} took longer than {timeout_s:g} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"encoding a chunk as {fmt.spec} failed: {done.stderr.decode(errors='replace')[-300:]}")
        with open(out, "rb") as fh:
            return fh.read()


def _encode_in_process(samples: np.ndarray, fmt: UploadFormat, options: tuple[str, ...]) -> bytes:
    """:func:`encode_upload` by PyAV, into memory: ``options`` are ``-name value`` pairs of codec options.

    For Opus at complexity 0 this is half the CPU of an ffmpeg run, whose start and PCM pipe cost
    as much as the encoding itself, and libopus gives the GIL back often enough that chunks encoding
    on two threads hold the event loop up about as long as ffmpeg runs do, a few ms (both measured by
    benchmarks/upload_accuracy.py).
    """
    kind = fmt.kind
    buf = io.BytesIO()
    with av.open(buf, "w", format=kind.container, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(kind.codec, rate=SAMPLE_RATE, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
        if fmt.bitrate:
            stream.codec_context.bit_rate = fmt.bitrate
        stream.codec_context.options = {name.lstrip("-"): value for name, value in zip(options[::2], options[1::2])}
        out.start_encoding()  # the headers, even for a chunk with no samples
        pcm = int16_pcm(samples)
        frames: list[av.AudioFrame | None] = [None]  # None: flush the encoder
        if len(pcm):
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, 0
            frames.insert(0, frame)
        for each in frames:
            for packet in stream.encode(each):
                out.mux(packet)
    return buf.getvalue()
