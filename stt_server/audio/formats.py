"""Rendering a transcript in the response formats OpenAI's transcription API offers."""

from __future__ import annotations

import json
import math
from typing import Any, Iterator

from stt_server.errors import BadRequest
from stt_server.audio.languages import language_name
from stt_server.audio.transcript import Segment, Transcript, ms

FORMATS = ("json", "verbose_json", "text", "srt", "vtt")

JSON_TYPE = "application/json"
# OpenAI sends text, srt and vtt all as text/plain; clients written against it expect that.
TEXT_TYPE = "text/plain; charset=utf-8"


def format_timestamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS<sep>mmm`` for ``seconds`` rounded to the millisecond; hours grow past 99, negatives clamp to 0."""
    return _format_ms(max(round(seconds * 1000), 0), sep)


def render(transcript: Transcript, fmt: str, *, task: str = "transcribe", words: bool = False) -> tuple[str, str]:
    """``(body, content_type)`` of ``transcript`` in response format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return _dumps({"text": transcript.text, "usage": usage(transcript.duration)}), JSON_TYPE
    if fmt == "verbose_json":
        return _dumps(_verbose(transcript, task, words)), JSON_TYPE
    if fmt == "text":
        return transcript.text + "\n", TEXT_TYPE
    if fmt == "srt":
        return _srt(transcript.segments), TEXT_TYPE
    if fmt == "vtt":
        return _vtt(transcript.segments), TEXT_TYPE
    raise BadRequest(f"unknown response format {fmt!r}; expected one of {', '.join(FORMATS)}",
                     param="response_format")


def usage(duration: float) -> dict[str, Any]:
    """OpenAI's usage for models billed by audio duration: whole seconds, rounded up."""
    return {"type": "duration", "seconds": math.ceil(round(duration, 3))}


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)


def _verbose(transcript: Transcript, task: str, words: bool) -> dict[str, Any]:
    """OpenAI's ``verbose_json`` shape: the language by its English name (a translation's is English)."""
    data: dict[str, Any] = {
        "task": task,
        "language": language_name("en" if task == "translate" else transcript.language),
        "duration": ms(transcript.duration),
        "text": transcript.text,
        "segments": [_segment_dict(i, seg) for i, seg in enumerate(transcript.segments)],
    }
    if words:
        data["words"] = [
            {"word": w.word.strip(), "start": ms(w.start), "end": ms(w.end)}
            for seg in transcript.segments for w in seg.words
        ]
    data["usage"] = usage(transcript.duration)
    return data


def _segment_dict(index: int, seg: Segment) -> dict[str, Any]:
    return {
        "id": index,
        "seek": int(seg.start * 100),  # Whisper's seek is in 10 ms mel frames
        "start": ms(seg.start),
        "end": ms(seg.end),
        "text": seg.text,
        "tokens": list(seg.tokens),
        "temperature": seg.temperature,
        "avg_logprob": seg.avg_logprob,
        "compression_ratio": seg.compression_ratio,
        "no_speech_prob": seg.no_speech_prob,
    }


def _srt(segments: tuple[Segment, ...]) -> str:
    """SubRip: numbered cues from 1, comma before milliseconds, a blank line between cues."""
    cues = [
        f"{n}\n{_format_ms(start, ',')} --> {_format_ms(end, ',')}\n{text}\n"
        for n, (start, end, text) in enumerate(_cues(segments, escape=False), start=1)
    ]
    return "\n".join(cues)


def _vtt(segments: tuple[Segment, ...]) -> str:
    """WebVTT: a header, then cues with a dot before milliseconds."""
    cues = [f"{_format_ms(start, '.')} --> {_format_ms(end, '.')}\n{text}\n"
            for start, end, text in _cues(segments, escape=True)]
    return "\n".join(["WEBVTT\n", *cues])


def _cues(segments: tuple[Segment, ...], *, escape: bool) -> Iterator[tuple[int, int, str]]:
    """``(start_ms, end_ms, text)`` per non-empty segment, starts monotonic and ``end >= start``."""
    floor = 0
    for seg in segments:
        text = _cue_text(seg.text, escape=escape)
        if not text:
            continue  # an empty cue would end at its timing line and corrupt the file
        start = max(round(seg.start * 1000), floor)
        end = max(round(seg.end * 1000), start)
        floor = start
        yield start, end, text


def _cue_text(text: str, *, escape: bool) -> str:
    """Cue text that cannot break the format: no blank lines, no ``-->``, VTT markup escaped."""
    # A blank line ends a cue, and a line containing "-->" reads as a timing line.
    body = "\n".join(line.strip() for line in text.strip().splitlines() if line.strip())
    while "-->" in body:
        body = body.replace("-->", "->")
    if escape:
        # In WebVTT cue text "&" and "<" start entities and tags; ">" is harmless.
        body = body.replace("&", "&amp;").replace("<", "&lt;")
    return body


def _format_ms(total_ms: int, sep: str) -> str:
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"
