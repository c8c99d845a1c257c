"""The cache through the server: a repeat costs no engine call, survives a restart, can be invalidated."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from stt_server.engines.local import resolve_model
from stt_server.settings import Settings
from tests.conftest import services_of, upload, wait_job

CLIP = "pocketsphinx_goforward.wav"


def _calls(client: TestClient) -> int:
    return int(services_of(client).engines["local"].stats()["calls"])


async def _run(client: TestClient, path: Path) -> dict:  # type: ignore[type-arg]
    job = await upload(client, path)
    return await wait_job(client, job["id"])


async def _events(client: TestClient, job_id: str) -> list[str]:
    text = await (await client.get(f"/v1/jobs/{job_id}/events")).text()
    return [line[7:] for line in text.splitlines() if line.startswith("event: ")]


async def test_repeat_upload_makes_no_engine_call(client: TestClient, corpus: Path) -> None:
    first = await _run(client, corpus / CLIP)
    calls = _calls(client)
    assert calls >= 1 and not first["cached"]
    second = await _run(client, corpus / CLIP)
    assert second["status"] == "completed" and second["cached"] is True
    assert _calls(client) == calls
    assert "job.cache_hit" in await _events(client, second["id"])
    a = await (await client.get(f"/v1/jobs/{first['id']}/transcript?format=srt")).text()
    b = await (await client.get(f"/v1/jobs/{second['id']}/transcript?format=srt")).text()
    assert a == b
    stats = (await (await client.get("/v1/admin/stats")).json())["cache"]
    assert stats["l1"]["hits"] >= 1


async def test_hits_survive_a_restart(make_client, settings: Settings, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    first = await make_client(settings)
    await _run(first, corpus / CLIP)
    await first.close()
    second = await make_client(settings)
    again = await _run(second, corpus / CLIP)
    assert again["cached"] is True and _calls(second) == 0


async def test_invalidate_by_job_engine_and_all(client: TestClient, corpus: Path) -> None:
    job = await _run(client, corpus / CLIP)
    response = await client.post("/v1/admin/cache/invalidate", json={"job_id": job["id"]})
    assert response.status == 200 and (await response.json())["removed"] >= 1
    calls = _calls(client)
    assert not (await _run(client, corpus / CLIP))["cached"] and _calls(client) > calls
    response = await client.post("/v1/admin/cache/invalidate", json={"engine": "local", "model": "tiny.en"})
    assert (await response.json())["removed"] >= 1
    calls = _calls(client)
    assert not (await _run(client, corpus / CLIP))["cached"] and _calls(client) > calls
    response = await client.post("/v1/admin/cache/invalidate", json={"all": True})
    assert (await response.json())["removed"] >= 1
    for bad in ({}, {"colour": "red"}, {"all": False}, {"job_id": "job_nope"}):
        response = await client.post("/v1/admin/cache/invalidate", json=bad)
        assert response.status in (400, 404)
        assert "error" in await response.json()


async def test_another_model_never_serves_old_results(make_client, settings: Settings, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    first = await make_client(settings)
    await _run(first, corpus / CLIP)
    await first.close()
    renamed = settings.with_overrides(local={"model": resolve_model("tiny.en")})
    second = await make_client(renamed)
    again = await _run(second, corpus / CLIP)
    assert again["cached"] is False and _calls(second) >= 1


async def test_corrupt_l2_and_l3_still_transcribe(make_client, settings: Settings, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    data = settings.data_path
    (data / "cache-l2").mkdir(parents=True)
    (data / "cache-l2" / "cache.db").write_bytes(b"this is not a database" * 100)
    (data / "cache.sqlite3").write_bytes(b"garbage" * 1000)
    client = await make_client(settings)
    done = await _run(client, corpus / CLIP)
    assert done["status"] == "completed"
    again = await _run(client, corpus / CLIP)
    assert again["cached"] is True  # L1 still serves
    stats = (await (await client.get("/v1/admin/stats")).json())["cache"]
    assert stats["l2"]["errors"] + stats["l3"]["errors"] >= 1 or not (stats["l2"]["available"] and stats["l3"]["available"])
