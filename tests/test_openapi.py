"""The OpenAPI document matches the app's routes, and schemathesis finds no 5xx and no error outside
the JSON error shape when it fuzzes a live server (keys configured) from that document."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings

from stt_server.http.apikeys import hash_key
from stt_server.app import create_app
from stt_server.http.openapi import document
from stt_server.settings import Settings, load_settings
from tests.gated_engine import GatedEngine, factory_for, gated_settings
from tests.liveapp import serving

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "fuzzing-admin-key-0123456789abcdef"
USER_KEY = "fuzzing-user-key-0123456789abcdef"
ERROR_FIELDS = {"message", "type", "param", "code"}
# Small by default to keep the suite fast; STT_FUZZ_EXAMPLES=300 digs deeper (and varies the seed).
EXAMPLES = int(os.environ.get("STT_FUZZ_EXAMPLES", "12"))


def _routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    return {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def test_every_route_is_documented_and_nothing_else(settings: Settings) -> None:
    documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    served = _routes(settings)
    assert served - documented == set(), "routes missing from stt_server/http/openapi.py"
    assert documented - served == set(), "documented operations the app does not serve"


async def test_the_document_is_served_without_a_key(make_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    keyed = settings.with_overrides(auth={"keys": [{"id": "ops", "sha256": hash_key(ADMIN_KEY), "role": "admin"}]})
    client = await make_client(keyed)
    response = await client.get("/openapi.json")
    assert response.status == 200
    body = await response.json()
    assert body["openapi"].startswith("3.") and "/v1/jobs" in body["paths"]


def _keys() -> list[dict[str, str]]:
    return [{"id": "ops", "sha256": hash_key(ADMIN_KEY), "role": "admin"},
            {"id": "alice", "sha256": hash_key(USER_KEY), "role": "user"}]


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = load_settings(ROOT / "config.toml", environ={})
    settings = gated_settings(base).with_overrides(
        server={"data_dir": str(tmp_path_factory.mktemp("fuzz") / "data"), "max_upload_bytes": 1 << 20},
        auth={"keys": _keys()}, limits={"uploads_per_minute": 0, "max_unfinished_jobs": 0},
        log={"level": "error", "json": "true"})
    with serving(settings, engine_factory=factory_for(GatedEngine())) as url:
        yield url


CONFIG = schemathesis.Config.from_dict({
    "headers": {"Authorization": f"Bearer {ADMIN_KEY}"},
    "request-timeout": 10,
    "generation": {"max-examples": EXAMPLES, "deterministic": "STT_FUZZ_EXAMPLES" not in os.environ},
    "phases": {"stateful": {"enabled": False}},
    "checks": {"positive_data_acceptance": {"enabled": False}},  # random bytes are not audio
})
# Loaded at import (schemathesis' fixture-based loader does not run under pytest 9); the live
# server's address is given to each call.
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


@schemathesis.check
def json_error_shape(ctx: Any, response: Any, case: Any) -> None:
    """Every error answer is OpenAI's JSON error object, whatever the route and the input."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_FIELDS, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return None


@schema.parametrize()
@hypothesis_settings(deadline=5000, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES)
def test_fuzzing_finds_no_5xx_and_only_json_errors(case: Any, live_url: str) -> None:
    case.call_and_validate(base_url=live_url)
