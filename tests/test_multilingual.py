"""The multilingual embedded model (Whisper base from the ``multilingual`` extra): joined once into
the data dir and checked, it detects the language of each clip and translates to English."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Awaitable, Callable

import openai
import pytest
from aiohttp.test_utils import TestClient

from stt_server.engines import multilingual
from stt_server.audio.languages import language_name
from stt_server.settings import Settings
from tests import openai_schemas as schemas

pytestmark = pytest.mark.skipif(not multilingual.available(), reason="pip install 'stt_server[multilingual]'")

CLIPS = ("es_meeting.wav", "de_meeting.wav", "it_meeting.wav", "pt_meeting.wav")


def words(text: str) -> set[str]:
    """The words of ``text``, any script, case and punctuation aside."""
    return {"".join(ch for ch in w if ch.isalnum()) for w in text.lower().split()} - {""}


def overlap(reference: str, hypothesis: str) -> float:
    """The share of the reference's words the hypothesis has."""
    return len(words(reference) & words(hypothesis)) / len(words(reference))


def test_the_model_is_joined_once_and_checked(tmp_path: Path) -> None:
    first = multilingual.model_dir(tmp_path)
    model = first / "model.bin"
    assert model.stat().st_size == multilingual.MODEL_BYTES
    assert {p.name for p in first.iterdir()} == {"model.bin", *multilingual.SIDE_FILES}
    mtime = model.stat().st_mtime_ns
    assert multilingual.model_dir(tmp_path) == first and model.stat().st_mtime_ns == mtime  # not joined again


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations so
async def test_base_detects_four_languages_and_translates(make_client: Callable[..., Awaitable[TestClient]],
                                                          settings: Settings, corpus: Path,
                                                          make_sdk: Callable[..., openai.AsyncOpenAI]) -> None:
    client = await make_client(settings.with_overrides(local={"model": "base"}))
    sdk = make_sdk(client, timeout=300)
    clips = corpus / "multilingual"
    expected = json.loads((clips / "transcripts.json").read_text(encoding="utf-8"))
    for name in CLIPS:
        with open(clips / name, "rb") as fh:
            result = await sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
        data = schemas.check(result.to_dict(), schemas.TRANSCRIPTION_VERBOSE_JSON)
        assert data["language"] == language_name(expected[name]["language"]), name
        assert overlap(expected[name]["text"], data["text"]) > 0.4, (name, data["text"])
    with open(clips / "es_meeting.wav", "rb") as fh:
        translated = await sdk.audio.translations.create(model="whisper-1", file=fh, response_format="verbose_json")
    data = schemas.check(translated.to_dict(), schemas.TRANSLATION_VERBOSE_JSON)
    assert data["language"] == "english"
    assert {"good", "morning", "today"} <= words(data["text"])
    with open(clips / "de_meeting.wav", "rb") as fh:  # a language named on input, by name
        german = await sdk.audio.transcriptions.create(model="whisper-1", file=fh, language="German")
    assert "Morgen" in german.text
    await sdk.close()
