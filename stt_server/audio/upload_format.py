"""The format a chunk is uploaded in to a remote engine: pure data and policy, no I/O.

Bytes on the wire per second of 16 kHz speech (measured): WAV 32,000; FLAC 16,000-24,000;
MP3 at 32 kb/s 4,000; Opus at 32 kb/s 3,000-3,500, with the same WER as WAV. Opus in Ogg at 32 kb/s
is the default. An upstream that refuses a format falls back along :data:`FALLBACK` (lossless
first, then the plainest), so a refusal never loses a chunk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass



@dataclass(frozen=True)
class Container:
    """How a format is written and sent: muxer, encoder, MIME type, the file name in the form."""

    container: str
    codec: str
    mime: str
    filename: str
    lossy: bool
    options: tuple[str, ...] = ()  # encoder settings after the bitrate, as ffmpeg's "-name value" pairs
    in_process: bool = False  # encoded by PyAV in this process rather than by an ffmpeg run


_FORMATS = {
    # Constrained VBR keeps Opus near its bitrate, so the planner's worst case holds. Complexity 0
    # in 60 ms packets costs a quarter of libopus's default (complexity 10, whose speech analysis
    # picks SILK) for the same words, and in-process half again: no process to start, no pipe
    # (benchmarks/upload_accuracy.py).
    "opus": Container("ogg", "libopus", "audio/ogg", "chunk.ogg", True,
                      ("-vbr", "constrained", "-compression_level", "0", "-frame_duration", "60"), in_process=True),
    "mp3": Container("mp3", "libmp3lame", "audio/mpeg", "chunk.mp3", True),
    "flac": Container("flac", "flac", "audio/flac", "chunk.flac", False),
    "wav": Container("wav", "pcm_s16le", "audio/wav", "chunk.wav", False),
}
NAMES = tuple(_FORMATS)
FALLBACK = {"opus": "flac", "mp3": "flac", "flac": "wav"}  # wav: nothing plainer to fall back to

WAV_BYTES_PER_SECOND = 32_000  # 16 kHz, 16-bit, mono
# Worst case above the nominal size: FLAC of noise is stored verbatim plus frame headers; Opus
# (constrained VBR) and MP3 (CBR) stay near their bitrate, plus container pages and headers.
_OVERHEAD = {"opus": 1.10, "mp3": 1.05, "flac": 1.03, "wav": 1.0}
HEADER_BYTES = 4096  # container headers (Ogg's OpusHead/OpusTags pages, ID3, FLAC STREAMINFO, RIFF)


@dataclass(frozen=True)
class UploadFormat:
    """A wire format: ``name`` is one of :data:`NAMES`; ``bitrate`` (bits/s) only for lossy ones."""

    name: str
    bitrate: int | None = None

    def __post_init__(self) -> None:
        if self.name not in _FORMATS:
            raise ValueError(f"upload_format must be one of {', '.join(NAMES)}, not {self.name!r}")
        if self.lossy and (self.bitrate is None or not 6_000 <= self.bitrate <= 160_000):
            raise ValueError(f"upload_bitrate for {self.name} must be 6-160 kb/s")

    @property
    def kind(self) -> Container:
        return _FORMATS[self.name]

    @property
    def lossy(self) -> bool:
        return self.kind.lossy

    @property
    def spec(self) -> str:
        """A short stable name, e.g. ``opus@32k`` or ``flac``: in stats and events."""
        return f"{self.name}@{self.bitrate // 1000}k" if self.lossy and self.bitrate else self.name

    @property
    def key(self) -> str:
        """:attr:`spec` plus a digest of the encoder's settings, e.g. ``opus@32k~1a2b3c``: in cache keys,
        so a transcript made from one encoding is never served for another."""
        kind = self.kind
        encoder = " ".join((*kind.options, *(["in-process"] if kind.in_process else [])))
        return self.spec + ("~" + hashlib.sha256(encoder.encode()).hexdigest()[:6] if encoder else "")

    @property
    def worst_bytes_per_s(self) -> float:
        """The most bytes a second of 16 kHz mono audio can take in this format."""
        nominal = self.bitrate / 8 if self.lossy and self.bitrate else WAV_BYTES_PER_SECOND
        return nominal * _OVERHEAD[self.name]


def upload_format(name: str, bitrate_kbps: float | None = None) -> UploadFormat:
    """The format a setting names (``upload_format``, ``upload_bitrate`` in kb/s; lossless ones ignore it)."""
    lossy = name in _FORMATS and _FORMATS[name].lossy
    return UploadFormat(name, round(bitrate_kbps * 1000) if lossy and bitrate_kbps is not None else None)


def fallback(fmt: UploadFormat) -> UploadFormat | None:
    """The format to try after an upstream refused ``fmt`` (None: no plainer one is left)."""
    nxt = FALLBACK.get(fmt.name)
    return UploadFormat(nxt) if nxt else None


def wire_spec(formats: "tuple[UploadFormat | None, ...]") -> str | None:
    """What a set of targets' formats adds to a cache key (None: raw samples, as the local engine takes)."""
    specs = sorted({f.key for f in formats if f is not None})
    return "+".join(specs) or None
