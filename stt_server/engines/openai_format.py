"""OpenAI's transcription wire format, outbound: the form a request sends and the verbose_json it gets back.

Pure functions over dicts and dataclasses (no I/O), so the remote engine keeps only the
transport: pooling, retries, the circuit and routing.
"""

from __future__ import annotations

import bisect
from typing import Any, Mapping

from stt_server.audio.languages import language_code
from stt_server.audio.transcript import Segment, Transcript, Word
from stt_server.engines.base import ChunkRequest

def upstream_path(request: ChunkRequest) -> str:
    """The upstream route for the request's task (relative to the upstream's base URL)."""
    return "/audio/translations" if request.task == "translate" else "/audio/transcriptions"


def request_form(model: str, request: ChunkRequest) -> dict[str, Any]:
    """The form fields (all but the file) asking for verbose_json with segment (and word) times.

    A translation sends only what OpenAI's createTranslation takes (no language, no granularities)."""
    form: dict[str, Any] = {"model": model, "response_format": "verbose_json",
                            "temperature": str(request.temperature)}
    if request.task != "translate":
        form["timestamp_granularities[]"] = ["segment", "word"] if request.word_timestamps else ["segment"]
        if request.language:
            form["language"] = request.language
    if request.prompt:
        form["prompt"] = request.prompt
    return form


def parse_verbose_json(data: Mapping[str, Any], duration: float, language: str | None = None) -> Transcript:
    """OpenAI's verbose_json as a Transcript. Top-level ``words`` go to the segment they start in;
    a bare ``{"text": ...}`` becomes one segment spanning the chunk."""
    raw = list(data.get("segments") or ())
    words = [_word(w) for w in data.get("words") or ()]
    starts = [float(s["start"]) for s in raw]
    per_seg: list[list[Word]] = [[] for _ in raw]
    for w in words if raw else ():
        per_seg[max(0, bisect.bisect_right(starts, w.start) - 1)].append(w)
    segments = tuple(_segment(s, tuple(map(_word, s["words"])) if s.get("words") else tuple(ws))
                     for s, ws in zip(raw, per_seg))
    text = str(data.get("text") or "").strip()
    if not segments and text:
        segments = (Segment(0.0, round(duration, 3), text, words=tuple(words)),)
    lang = str(language or data.get("language") or "en").lower()
    return Transcript(segments, language_code(lang) or lang, round(duration, 3), text)


def _segment(s: Mapping[str, Any], words: tuple[Word, ...]) -> Segment:
    return Segment(
        start=float(s["start"]), end=float(s["end"]), text=str(s.get("text", "")),
        tokens=tuple(int(t) for t in s.get("tokens") or ()), temperature=float(s.get("temperature") or 0.0),
        avg_logprob=float(s.get("avg_logprob") or 0.0), compression_ratio=float(s.get("compression_ratio") or 1.0),
        no_speech_prob=float(s.get("no_speech_prob") or 0.0), words=words)


def _word(w: Mapping[str, Any]) -> Word:
    return Word(float(w["start"]), float(w["end"]), str(w.get("word", "")), float(w.get("probability", 1.0)))
