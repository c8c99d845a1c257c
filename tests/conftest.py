"""Shared fixtures: settings in a temporary data dir, the real app on a real port, corpus files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import openai
import pytest
from aiohttp.test_utils import TestClient

from stt_server.app import create_app
from stt_server.services import SERVICES, Services
from stt_server.settings import Settings, load_settings
from tests.corpus import require_corpus

pytest_plugins = ["tests.conftest_upstream"]  # the fake upstream fixtures

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def corpus() -> Path:
    return require_corpus()


@pytest.fixture(scope="session")
def chromium() -> None:
    """Debian's chromium for the browser tests (installed when missing and possible), or the test is skipped."""
    from tests.browser import ensure_chromium

    reason = ensure_chromium()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shipped config.toml, pointed at a fresh data dir."""
    base = load_settings(ROOT / "config.toml", environ={})
    # A short drain: a test's server stops with a job held mid-chunk (the shipped grace is 30 s).
    return base.with_overrides(server={"data_dir": str(tmp_path / "data")}, log={"json": "true"},
                               queue={"shutdown_grace_s": 2.0})


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> Callable[..., Awaitable[TestClient]]:
    async def make(settings: Settings, **kwargs: Any) -> TestClient:
        return await aiohttp_client(create_app(settings, **kwargs))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> TestClient:
    return await make_client(settings)


@pytest.fixture
async def make_sdk() -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    """OpenAI's async SDK on a test server's ``/v1`` (or any ``base_url``), closed when the test ends:
    a client left open is closed later by the garbage collector, on whichever test's event loop then
    runs, and its connections' loop is gone by then."""
    made: list[openai.AsyncOpenAI] = []

    def make(server: TestClient | str, **kwargs: Any) -> openai.AsyncOpenAI:
        base = server if isinstance(server, str) else str(server.make_url("/v1"))
        options: dict[str, Any] = {"api_key": "unused", "max_retries": 0, **kwargs}
        made.append(openai.AsyncOpenAI(base_url=base, **options))
        return made[-1]

    yield make
    for sdk in made:
        await sdk.close()


@pytest.fixture
def sdk(client: TestClient, make_sdk: Callable[..., openai.AsyncOpenAI]) -> openai.AsyncOpenAI:
    """The async SDK on the default test server."""
    return make_sdk(client, timeout=120)


def services_of(client: TestClient) -> Services:
    return client.server.app[SERVICES]


async def upload(client: TestClient, path: Path, **fields: str) -> dict[str, Any]:
    """POST a file to /v1/jobs and return the job (asserting 202)."""
    from aiohttp import FormData

    form = FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="application/octet-stream")
    response = await client.post("/v1/jobs", data=form)
    body = await response.json()
    assert response.status == 202, body
    assert response.headers["Location"] == f"/v1/jobs/{body['id']}"
    return body


async def wait_job(client: TestClient, job_id: str, timeout: float = 240.0) -> dict[str, Any]:
    """Poll until the job ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        response = await client.get(f"/v1/jobs/{job_id}")
        body = await response.json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
