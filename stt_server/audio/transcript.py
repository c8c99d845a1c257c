"""Timed transcript types shared by engines, the merger, the cache and the formats."""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Any


def ms(seconds: float) -> float:
    """Seconds rounded to the millisecond: what every serialised time carries (no float noise)."""
    return round(float(seconds), 3)


@dataclass(frozen=True)
class Word:
    """One word with its times in seconds."""

    start: float
    end: float
    word: str
    probability: float = 1.0


@dataclass(frozen=True)
class Segment:
    """One timed stretch of text, as Whisper gives it."""

    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] = ()

    def shifted(self, offset: float) -> "Segment":
        """The same segment with every time moved by ``offset`` seconds."""
        return Segment(
            start=round(self.start + offset, 3),
            end=round(self.end + offset, 3),
            text=self.text,
            tokens=self.tokens,
            temperature=self.temperature,
            avg_logprob=self.avg_logprob,
            compression_ratio=self.compression_ratio,
            no_speech_prob=self.no_speech_prob,
            words=tuple(
                Word(round(w.start + offset, 3), round(w.end + offset, 3), w.word, w.probability)
                for w in self.words
            ),
        )


@dataclass(frozen=True)
class Transcript:
    """A whole timed transcript: what an engine returns for a chunk, and what a job produces."""

    segments: tuple[Segment, ...]
    language: str = "en"
    duration: float = 0.0
    text: str = field(default="")

    def __post_init__(self) -> None:
        if not self.text and self.segments:
            object.__setattr__(self, "text", " ".join(s.text.strip() for s in self.segments).strip())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (also the cache's stored form), times rounded to the millisecond."""
        data = asdict(self)
        data["duration"] = ms(self.duration)
        for seg in data["segments"]:
            for timed in (seg, *seg["words"]):
                timed["start"], timed["end"] = ms(timed["start"]), ms(timed["end"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transcript":
        """Inverse of :meth:`to_dict`."""
        segments = tuple(
            Segment(
                **{k: v for k, v in s.items() if k not in ("words", "tokens")},
                tokens=tuple(s.get("tokens", ())),
                words=tuple(Word(**w) for w in s.get("words", ())),
            )
            for s in data.get("segments", ())
        )
        return cls(
            segments=segments,
            language=data.get("language", "en"),
            duration=float(data.get("duration", 0.0)),
            text=data.get("text", ""),
        )
