"""Languages by ISO 639-1 code or English name, Whisper's table, and the English-only model check."""

from __future__ import annotations

import pytest
from faster_whisper.tokenizer import _LANGUAGE_CODES

from stt_server.errors import BadRequest
from stt_server.audio.languages import LANGUAGES, check_capable, language_code, language_name, parse_language
from stt_server.audio.merge import spoken_language
from stt_server.audio.chunking import Chunk
from stt_server.audio.transcript import Segment, Transcript


def test_the_table_is_whispers() -> None:
    assert set(LANGUAGES) == set(_LANGUAGE_CODES) and len(LANGUAGES) == 100


@pytest.mark.parametrize(("value", "code"), [
    ("en", "en"), ("EN", "en"), ("english", "en"), ("English", "en"), (" german ", "de"), ("pt-BR", "pt"),
    ("Haitian Creole", "ht"), ("castilian", "es"), ("yue", "yue"), ("klingon", None), ("xx-YY", None), ("", None)])
def test_language_code(value: str, code: str | None) -> None:
    assert language_code(value) == code


def test_unknown_languages_are_a_400_listing_the_valid_ones() -> None:
    assert parse_language(None) is None and parse_language("  ") is None and parse_language("French") == "fr"
    with pytest.raises(BadRequest) as err:
        parse_language("elvish")
    assert err.value.param == "language" and "'elvish'" in err.value.message
    assert "en, zh, de" in err.value.message and "yue" in err.value.message


@pytest.mark.parametrize(("code", "name"), [("en", "english"), ("pt", "portuguese"), ("klingon", "klingon")])
def test_language_name(code: str, name: str) -> None:
    assert language_name(code) == name


@pytest.mark.parametrize(("model", "language", "task", "alternatives", "param", "fix"), [
    ("tiny.en", "de", "transcribe", [], "language", "stt_server[multilingual]"),
    ("tiny.en", None, "translate", ["openai"], "model", "'openai'"),
    ("distil-large-v3.en", "fr", "transcribe", ["local"], "language", "'local'"),
])
def test_english_only_models_refuse_other_work(model: str, language: str | None, task: str,
                                               alternatives: list[str], param: str, fix: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_capable(model, "e", language, task, alternatives)
    assert err.value.param == param and fix in err.value.message and model in err.value.message


@pytest.mark.parametrize(("model", "language", "task"), [
    ("tiny.en", None, "transcribe"), ("tiny.en", "en", "transcribe"), ("base", "de", "translate"),
    ("openai/whisper-large-v3", "ru", "transcribe")])
def test_capable_models_pass(model: str, language: str | None, task: str) -> None:
    check_capable(model, "e", language, task, [])


@pytest.mark.parametrize(("parts", "language"), [
    ([], "en"),
    ([(10.0, "es", "hola")], "es"),
    ([(4.0, "pt", "bom dia"), (6.0, "es", "buenos días")], "es"),
    ([(9.0, "de", ""), (1.0, "it", "ciao")], "it"),  # a silent chunk's language does not count
])
def test_spoken_language_is_that_of_most_speech(parts: list[tuple[float, str, str]], language: str) -> None:
    chunks, start = [], 0.0
    for index, (seconds, lang, text) in enumerate(parts):
        segments = (Segment(0.0, seconds, text),) if text else ()
        chunks.append((Chunk(index, start, start + seconds), Transcript(segments, language=lang)))
        start += seconds
    assert spoken_language(chunks) == language
