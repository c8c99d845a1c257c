"""The form fields of OpenAI's createTranscription and createTranslation, checked: pure, no I/O.

Everything OpenAI defines is either honoured or refused with a 400 that names the field; nothing
is silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from stt_server.errors import BadRequest
from stt_server.audio.formats import FORMATS
from stt_server.audio.languages import parse_language

TRANSCRIBE, TRANSLATE = "transcribe", "translate"
GRANULARITIES = ("segment", "word")
STREAM_FORMATS = ("json", "text")
DIARIZE_MODEL = "gpt-4o-transcribe-diarize"
# Defined by OpenAI, not offered here: the field and why.
UNSUPPORTED = {
    "known_speaker_names": "speaker names need diarization, which this server does not offer",
    "known_speaker_references": "speaker references need diarization, which this server does not offer",
    "keywords": "keyword biasing is not supported; put the words in 'prompt' instead",
    "languages": "several languages per request are not supported; send one 'language' or none to detect it",
}
VAD_FIELDS = {"type": str, "prefix_padding_ms": int, "silence_duration_ms": int, "threshold": float}
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class OpenAIRequest:
    """A checked request: what the job and the response need."""

    model: str
    task: str
    response_format: str
    temperature: float
    words: bool
    stream: bool
    language: str | None
    prompt: str | None


def base_name(field: str) -> str:
    """``include[]``, ``include[0]`` and ``chunking_strategy[type]`` are ``include`` and ``chunking_strategy``."""
    return field.split("[", 1)[0]


def parse_request(fields: Mapping[str, str], task: str = TRANSCRIBE) -> OpenAIRequest:
    """Check every field OpenAI defines for ``task``; a 400 naming the field for anything not honoured."""
    _refuse_unsupported(fields, task)
    model = (fields.get("model") or "").strip()
    if not model:
        raise BadRequest("missing required field 'model'", param="model")
    if model == DIARIZE_MODEL:
        raise BadRequest(f"{model}: diarization is not available on this server; use whisper-1 or "
                         "gpt-4o-transcribe", param="model", code="diarization_unsupported")
    fmt = _response_format(fields)
    words = _words(fields, fmt)
    stream = _flag(fields, "stream")
    if stream and task == TRANSLATE:
        raise BadRequest("stream is not available for translations", param="stream")
    if stream and fmt not in STREAM_FORMATS:
        raise BadRequest(f"stream=true needs response_format {' or '.join(STREAM_FORMATS)}, not {fmt!r}",
                         param="stream")
    return OpenAIRequest(model=model, task=task, response_format=fmt, temperature=_temperature(fields),
                         words=words, stream=stream, language=parse_language(fields.get("language")),
                         prompt=(fields.get("prompt") or "").strip() or None)


def _refuse_unsupported(fields: Mapping[str, str], task: str) -> None:
    names = {base_name(name): name for name in fields}
    for name, why in UNSUPPORTED.items():
        if name in names:
            raise BadRequest(f"{names[name]}: {why}", param=names[name], code="unsupported_parameter")
    if "include" in names:
        raise BadRequest(f"{names['include']}: per-token log probabilities (logprobs) are not available "
                         "from this server's engines; leave out include[]", param=names["include"],
                         code="unsupported_parameter")
    if "chunking_strategy" in names:
        if task == TRANSLATE:
            raise BadRequest("chunking_strategy is not a field of translations", param="chunking_strategy")
        check_chunking_strategy(_chunking_value(fields))


def _chunking_value(fields: Mapping[str, str]) -> Any:
    """The field as one value: a plain string, or the object sent as JSON or as ``chunking_strategy[key]`` parts."""
    if "chunking_strategy" in fields:
        raw = fields["chunking_strategy"].strip()
        if raw.startswith("{"):
            try:
                return json.loads(raw)
            except ValueError:
                raise BadRequest("chunking_strategy is not valid JSON", param="chunking_strategy") from None
        return raw
    return {name[len("chunking_strategy["):-1]: value for name, value in fields.items()
            if name.startswith("chunking_strategy[") and name.endswith("]")}


def check_chunking_strategy(value: Any) -> None:
    """``"auto"`` or ``{"type": "server_vad", ...}`` with OpenAI's keys and types; anything else is a 400.

    Either way the server cuts at silences itself (its own energy-based planner)."""
    if value == "auto":
        return
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise BadRequest('chunking_strategy must be "auto" or an object with "type": "server_vad"',
                         param="chunking_strategy", code="invalid_chunking_strategy")
    for key, raw in value.items():
        kind = VAD_FIELDS.get(key)
        if kind is None:
            raise BadRequest(f"chunking_strategy: unknown key {key!r}; allowed: {', '.join(VAD_FIELDS)}",
                             param="chunking_strategy", code="invalid_chunking_strategy")
        try:
            number = kind(raw)
        except (TypeError, ValueError):
            number = None
        if number is None or isinstance(raw, bool) or (kind is not str and not 0 <= number <= (
                1 if key == "threshold" else 10_000)):
            raise BadRequest(f"chunking_strategy.{key} must be a {kind.__name__} in range", param="chunking_strategy",
                             code="invalid_chunking_strategy")


def _response_format(fields: Mapping[str, str]) -> str:
    fmt = (fields.get("response_format") or "json").strip()
    if fmt == "diarized_json":
        raise BadRequest("diarized_json: diarization is not available on this server; use verbose_json for "
                         "timed segments", param="response_format", code="diarization_unsupported")
    if fmt not in FORMATS:
        raise BadRequest(f"unknown response_format {fmt!r}; use one of {', '.join(FORMATS)}",
                         param="response_format")
    return fmt


def _temperature(fields: Mapping[str, str]) -> float:
    try:
        temperature = float(fields.get("temperature") or 0.0)
    except ValueError:
        raise BadRequest("temperature must be a number", param="temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise BadRequest("temperature must be between 0 and 1", param="temperature")
    return temperature


def _words(fields: Mapping[str, str], fmt: str) -> bool:
    raw = ",".join(v for k, v in fields.items() if base_name(k) == "timestamp_granularities")
    granularities = {g.strip() for g in raw.split(",") if g.strip()}
    if granularities - set(GRANULARITIES):
        raise BadRequest(f"timestamp_granularities must be among {', '.join(GRANULARITIES)}",
                         param="timestamp_granularities[]")
    words = "word" in granularities
    if words and fmt != "verbose_json":
        raise BadRequest("word timestamps need response_format=verbose_json", param="timestamp_granularities[]")
    return words


def _flag(fields: Mapping[str, str], name: str) -> bool:
    value = (fields.get(name) or "").strip().lower()
    if value not in TRUE + FALSE:
        raise BadRequest(f"{name} must be true or false", param=name)
    return value in TRUE
