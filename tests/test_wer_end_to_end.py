"""Real speech through the whole server: a long file of joined corpus clips, cut into several
chunks, must score a word error rate no more than 2 points above faster-whisper on each clip."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from stt_server.engines.local import resolve_model
from tests.conftest import upload, wait_job
from tests.corpus import references, speech_files, wer, build_long_audio


@pytest.fixture(scope="module")
def direct_wer() -> float:
    """faster-whisper called directly, one call per clip, default decoding options."""
    from faster_whisper import WhisperModel

    model = WhisperModel(resolve_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=2)
    refs, hyps = [], []
    for path in speech_files():
        segments, _ = model.transcribe(str(path), language="en")
        refs.append(references()[path.name])
        hyps.append(" ".join(s.text.strip() for s in segments))
    return wer(" ".join(refs), " ".join(hyps))


async def test_long_file_wer_close_to_direct_per_clip(
    client: TestClient, tmp_path: Path, direct_wer: float
) -> None:
    audio = tmp_path / "long.wav"
    placed = build_long_audio(audio, min_duration_s=140.0, gap_s=1.5)
    job = await upload(client, audio, language="en")
    done = await wait_job(client, job["id"])
    assert done["status"] == "completed", done
    assert done["progress"]["chunks_total"] >= 4
    body = await (await client.get(f"/v1/jobs/{job['id']}/transcript?format=verbose_json")).json()
    reference = " ".join(text for text, _, _ in placed)
    server_wer = wer(reference, body["text"])
    print(f"WER direct per clip {direct_wer:.3f}, server on the joined file {server_wer:.3f}")
    assert server_wer <= direct_wer + 0.02
    ends = [s["end"] for s in body["segments"]]
    assert ends == sorted(ends) and ends[-1] <= done["duration_s"] + 0.05
