"""What OpenAI's API reference documents for each response this server imitates: fields and types.

Written by hand from OpenAI's published OpenAPI description (openai/openai-openapi, components
``CreateTranscriptionResponseJson``, ``CreateTranscriptionResponseVerboseJson``,
``CreateTranslationResponseJson``, ``CreateTranslationResponseVerboseJson``, ``TranscriptionSegment``,
``TranscriptionWord``, ``TranscriptTextUsageDuration``, ``TranscriptTextDeltaEvent``,
``TranscriptTextDoneEvent``, ``Model``, ``ListModelsResponse`` and the error object), so that a
drift of the server from the reference fails a test. :func:`check` validates a value against one.

One deliberate difference: the reference gives ``transcript.text.done`` token usage (the
gpt-4o models bill by token); Whisper-style models bill by duration, so here ``usage`` may be either
of the two usage shapes the reference defines, as in ``CreateTranscriptionResponseJson``.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}


def obj(required: str, **properties: Schema) -> Schema:
    return {"type": "object", "required": required.split(), "properties": properties}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def const(value: str) -> Schema:
    return {"type": "string", "enum": [value]}


USAGE_DURATION = obj("type seconds", type=const("duration"), seconds=NUMBER)
USAGE_TOKENS = obj("type input_tokens output_tokens total_tokens", type=const("tokens"), input_tokens=INTEGER,
                   output_tokens=INTEGER, total_tokens=INTEGER,
                   input_token_details=obj("", text_tokens=INTEGER, audio_tokens=INTEGER))
LOGPROB = obj("", token=STRING, logprob=NUMBER, bytes=array(NUMBER))
SEGMENT = obj("id seek start end text tokens temperature avg_logprob compression_ratio no_speech_prob",
              id=INTEGER, seek=INTEGER, start=NUMBER, end=NUMBER, text=STRING, tokens=array(INTEGER),
              temperature=NUMBER, avg_logprob=NUMBER, compression_ratio=NUMBER, no_speech_prob=NUMBER)
WORD = obj("word start end", word=STRING, start=NUMBER, end=NUMBER)

TRANSCRIPTION_JSON = obj("text", text=STRING, logprobs=array(LOGPROB),
                         usage={"anyOf": [USAGE_TOKENS, USAGE_DURATION]})
TRANSCRIPTION_VERBOSE_JSON = obj("language duration text", language=STRING, duration=NUMBER, text=STRING,
                                 words=array(WORD), segments=array(SEGMENT), usage=USAGE_DURATION)
TRANSLATION_JSON = obj("text", text=STRING)
TRANSLATION_VERBOSE_JSON = obj("language duration text", language=STRING, duration=NUMBER, text=STRING,
                               segments=array(SEGMENT))
TEXT_DELTA_EVENT = obj("type delta", type=const("transcript.text.delta"), delta=STRING, logprobs=array(LOGPROB),
                       segment_id=STRING)
TEXT_DONE_EVENT = obj("type text", type=const("transcript.text.done"), text=STRING, logprobs=array(LOGPROB),
                      usage={"anyOf": [USAGE_TOKENS, USAGE_DURATION]})
MODEL = obj("id object created owned_by", id=STRING, created=INTEGER, object=const("model"), owned_by=STRING)
MODEL_LIST = obj("object data", object=const("list"), data=array(MODEL))
ERROR = obj("error", error=obj("message type", message=STRING, type=STRING,
                               param={"type": ["string", "null"]}, code={"type": ["string", "null"]}))

_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
                                       "integer": (int,), "number": (int, float), "null": (type(None),)}


def problems(value: Any, schema: Schema, where: str = "$") -> list[str]:
    """Every way ``value`` departs from ``schema`` (empty when it conforms)."""
    if "anyOf" in schema:
        options = [problems(value, s, where) for s in schema["anyOf"]]
        return [] if any(not p for p in options) else [f"{where}: matches none of anyOf: {options}"]
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not any(isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool))
               for k in kinds):
        return [f"{where}: {value!r} is not {'/'.join(kinds)}"]
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        found += [f"{where}: missing {name!r}" for name in schema.get("required", ()) if name not in value]
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                found += problems(value[name], sub, f"{where}.{name}")
    if isinstance(value, list):
        for i, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{i}]")
    return found


def check(value: Any, schema: Schema) -> Any:
    """Assert that ``value`` conforms to ``schema``; return it."""
    found = problems(value, schema)
    assert not found, "\n".join(found)
    return value
