"""API keys: hashing and constant-time matching (pure), the middleware's 401/403, job isolation
between keys, where the server may listen, and the ``hash-key`` command."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from stt_server.http import apikeys
from stt_server.http.apikeys import ApiKey, hash_key, match_key, parse_keys
from stt_server.http.auth import bearer_token, bind_refusal, is_loopback
from stt_server.settings import Settings
from stt_server.http.signedurl import UrlSigner
from tests.conftest import services_of
from tests.gated_engine import GatedEngine, factory_for, gated_settings

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"alice": "alice-secret-key-000000000000000000", "bob": "bob-secret-key-11111111111111111111",
        "ops": "ops-secret-key-222222222222222222222"}


def _key(name: str, role: str = "user") -> ApiKey:
    return ApiKey(name, hash_key(KEYS[name]), role)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


# -- pure ----------------------------------------------------------------------


def test_hash_is_sha256_hex_of_the_stripped_key() -> None:
    assert hash_key("abc") == hashlib.sha256(b"abc").hexdigest() == hash_key(" abc\n")


def test_match_key_compares_every_key_without_early_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [_key("alice"), _key("bob"), _key("ops", "admin")]
    calls: list[bytes] = []
    real = apikeys.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", counting)
    for token, expected in ((KEYS["alice"], keys[0]), (KEYS["ops"], keys[2]), ("wrong", None), ("", None)):
        calls.clear()
        assert match_key(token, keys) == expected
        assert len(calls) == len(keys)  # the first key matching does not stop the loop


@pytest.mark.parametrize("value, expected", [
    ([], ()),
    ([{"id": "a", "sha256": "A" * 64}], (ApiKey("a", "a" * 64, "user"),)),
    ("a:admin:" + "b" * 64 + ", c:user:" + "c" * 64, (ApiKey("a", "b" * 64, "admin"), ApiKey("c", "c" * 64))),
    ('[{"id": "a", "sha256": "' + "d" * 64 + '", "role": "admin"}]', (ApiKey("a", "d" * 64, "admin"),)),
    ("", ()),
])
def test_parse_keys_from_tables_and_environment_text(value: Any, expected: tuple[ApiKey, ...]) -> None:
    assert parse_keys(value) == expected


@pytest.mark.parametrize("value, words", [
    ([{"id": "a", "sha256": "my-plain-key"}], "64 lowercase hex"),
    ([{"id": "a", "sha256": "a" * 64, "role": "root"}], "role"),
    ([{"id": "a", "sha256": "a" * 64}, {"id": "a", "sha256": "b" * 64}], "share one id"),
    ([{"id": "a", "sha256": "a" * 64}, {"id": "b", "sha256": "a" * 64}], "share one sha256"),
    ([{"id": "a b", "sha256": "a" * 64}], "id"),
    ([{"id": "a"}], "needs id and sha256"),
    ([{"id": "a", "sha256": "a" * 64, "key": "plain"}], "needs id and sha256"),
    ("alice:" + "a" * 64, "id:role:sha256"),
])
def test_bad_key_configuration_is_refused(value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_keys(value)


def test_config_file_forms_give_one_immutable_settings_object(tmp_path: Path) -> None:
    from stt_server.settings import load_settings

    inline = f'[auth]\nkeys = [{{ id = "alice", sha256 = "{"a" * 64}", role = "admin" }}]\n'
    tables = f'[[auth.keys]]\nid = "alice"\nsha256 = "{"a" * 64}"\nrole = "admin"\n'
    for text in (inline, tables):
        tomllib.loads(text)
        (tmp_path / "c.toml").write_text(text)
        settings = load_settings(tmp_path / "c.toml", environ={})
        assert settings.auth.keys == (ApiKey("alice", "a" * 64, "admin"),)
        with pytest.raises(AttributeError):
            settings.auth.keys = ()  # type: ignore[misc]
    env = {"STT_AUTH_KEYS": "bob:user:" + "b" * 64}
    assert load_settings(tmp_path / "c.toml", environ=env).auth.keys == (ApiKey("bob", "b" * 64),)


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"), ("Basic abc", None),
    ("Bearer", None), ("Bearer ", None), ("", None), (None, None), ("abc", None),
])
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("host, keys, allowed, refused", [
    ("127.0.0.1", False, False, False), ("localhost", False, False, False), ("::1", False, False, False),
    ("127.0.0.2", False, False, False), ("0.0.0.0", False, False, True), ("::", False, False, True),
    ("192.168.1.5", False, False, True), ("0.0.0.0", True, False, False), ("0.0.0.0", False, True, False),
])
def test_bind_policy(host: str, keys: bool, allowed: bool, refused: bool) -> None:
    settings = Settings().with_overrides(server={"host": host, "allow_unauthenticated_remote": allowed},
                                         auth={"keys": [_key("alice")] if keys else []})
    assert (bind_refusal(settings) is not None) == refused
    assert is_loopback(host) == (host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))


# -- over HTTP -------------------------------------------------------------------


@pytest.fixture
async def keyed(make_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    keys = [_key("alice"), _key("bob"), _key("ops", "admin")]
    return await make_client(gated_settings(settings).with_overrides(auth={"keys": keys}),
                             engine_factory=factory_for(GatedEngine()))


async def _upload(client: TestClient, corpus: Path, who: str) -> dict[str, Any]:
    form = FormData()
    form.add_field("file", (corpus / "pocketsphinx_cards_001.wav").read_bytes(), filename="cards.wav")
    response = await client.post("/v1/jobs", data=form, headers=auth(who))
    assert response.status == 202, await response.text()
    return await response.json()


async def _error(response: Any, status: int, kind: str) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["type"] == kind
    return body["error"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YTpi"},
                                     {"Authorization": "Bearer " + hash_key(KEYS["alice"])}])
async def test_missing_or_wrong_key_is_401_json(keyed: TestClient, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/models"),
                         ("GET", "/v1/jobs/job_x/audio"), ("GET", "/nowhere"), ("GET", "/metrics")):
        response = await keyed.request(method, path, headers=headers)
        await _error(response, 401, "authentication_error")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_probes_ui_and_api_description_stay_open(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/", "/static/app.js", "/openapi.json"):
        response = await keyed.get(path)
        assert response.status in (200, 503), (path, response.status)


async def test_admin_routes_need_an_admin_key(keyed: TestClient) -> None:
    for path in ("/metrics", "/v1/admin/stats"):
        await _error(await keyed.get(path, headers=auth("alice")), 403, "permission_error")
        assert (await keyed.get(path, headers=auth("ops"))).status == 200
    response = await keyed.post("/v1/admin/cache/invalidate", json={"all": True}, headers=auth("bob"))
    await _error(response, 403, "permission_error")


async def test_a_key_sees_only_its_own_jobs(keyed: TestClient, corpus: Path) -> None:
    mine = await _upload(keyed, corpus, "alice")
    theirs = await _upload(keyed, corpus, "bob")
    job_id = mine["id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/transcript", f"/v1/jobs/{job_id}/events",
                 f"/v1/jobs/{job_id}/audio"):
        error = await _error(await keyed.get(path, headers=auth("bob")), 404, "not_found_error")
        assert "no job" in error["message"]
    await _error(await keyed.delete(f"/v1/jobs/{job_id}", headers=auth("bob")), 404, "not_found_error")
    assert (await keyed.get(f"/v1/jobs/{job_id}", headers=auth("alice"))).status == 200
    listed = {who: {j["id"] for j in (await (await keyed.get("/v1/jobs", headers=auth(who))).json())["data"]}
              for who in ("alice", "bob", "ops")}
    assert listed == {"alice": {job_id}, "bob": {theirs["id"]}, "ops": {job_id, theirs["id"]}}
    stored = await services_of(keyed).store.get_job(job_id)
    assert stored is not None and stored.owner == "alice"
    assert (await keyed.get(f"/v1/jobs/{theirs['id']}", headers=auth("ops"))).status == 200
    assert (await keyed.delete(f"/v1/jobs/{job_id}", headers=auth("alice"))).status == 204


async def test_me_names_the_key_and_its_role(keyed: TestClient, client: TestClient) -> None:
    assert await (await keyed.get("/v1/me", headers=auth("alice"))).json() == {
        "key_id": "alice", "role": "user", "keys_required": True}
    assert (await (await keyed.get("/v1/me", headers=auth("ops"))).json())["role"] == "admin"
    await _error(await keyed.get("/v1/me"), 401, "authentication_error")
    assert await (await client.get("/v1/me")).json() == {"key_id": None, "role": "admin", "keys_required": False}


@pytest.mark.parametrize("signer_ttl", [300.0])
def test_signed_links_are_bound_to_job_key_and_time(signer_ttl: float) -> None:
    signer = UrlSigner(b"k" * 32, signer_ttl)
    params, expires = signer.sign("job_a", "alice", now=1000.0)
    assert expires == 1300 and set(params) == {"kid", "exp", "sig"}
    ok = ("job_a", "alice", params["exp"], params["sig"])
    assert signer.verify(*ok, now=1299.0)
    assert not signer.verify(*ok, now=1300.0)  # expired
    assert not signer.verify("job_b", *ok[1:], now=1000.0)  # another job
    assert not signer.verify("job_a", "bob", *ok[2:], now=1000.0)  # another key
    assert not signer.verify("job_a", "alice", str(expires + 3600), params["sig"], now=1000.0)  # stretched
    assert not signer.verify("job_a", "alice", "soon", params["sig"], now=1000.0)
    assert not UrlSigner(b"x" * 32).verify(*ok, now=1000.0)  # another server's secret


async def test_audio_plays_through_a_signed_link_without_the_key_in_it(keyed: TestClient, corpus: Path) -> None:
    job = await _upload(keyed, corpus, "alice")
    path = f"/v1/jobs/{job['id']}/audio-url"
    await _error(await keyed.post(path, headers=auth("bob")), 404, "not_found_error")  # bob's view: no job
    link = await (await keyed.post(path, headers=auth("alice"))).json()
    assert link["url"].startswith(f"/v1/jobs/{job['id']}/audio?") and "kid=alice" in link["url"]
    assert all(key not in link["url"] for key in KEYS.values())
    played = await keyed.get(link["url"], headers={"Range": "bytes=0-99"})
    assert played.status == 206 and len(await played.read()) == 100
    base, _, query = link["url"].partition("?")
    for bad in (query.replace("kid=alice", "kid=bob"), query.replace("sig=", "sig=0"), query + "&exp=1",
                query.replace("exp=", "exp=9")):
        response = await keyed.get(f"{base}?{bad}")
        assert (await _error(response, 401, "authentication_error"))["code"] == "invalid_signature", bad
    other = await _upload(keyed, corpus, "bob")
    await _error(await keyed.get(f"/v1/jobs/{other['id']}/audio?{query}"), 401, "authentication_error")
    # A signature opens only the audio: no other route takes one.
    await _error(await keyed.get(f"/v1/jobs/{job['id']}?{query}"), 401, "authentication_error")


async def test_keys_themselves_are_stored_nowhere(keyed: TestClient, corpus: Path) -> None:
    await _upload(keyed, corpus, "alice")
    data = services_of(keyed).settings.data_path
    for path in [p for p in data.rglob("*") if p.is_file()] + [ROOT / "config.toml"]:
        raw = path.read_bytes()
        assert all(key.encode() not in raw for key in KEYS.values()), path


async def test_without_keys_everything_is_open_and_jobs_belong_to_the_address(client: TestClient,
                                                                            corpus: Path) -> None:
    form = FormData()
    form.add_field("file", (corpus / "pocketsphinx_cards_001.wav").read_bytes(), filename="c.wav")
    job = await (await client.post("/v1/jobs", data=form)).json()
    assert (await client.get("/v1/admin/stats")).status == 200
    stored = await services_of(client).store.get_job(job["id"])
    assert stored is not None and stored.owner == "ip:127.0.0.1"


# -- the command line ------------------------------------------------------------------


def _cli(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STT_LOG_LEVEL": "info", "STT_LOG_JSON": "true"}
    return subprocess.run([sys.executable, "-m", "stt_server", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def test_hash_key_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stt_server.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("my-long-api-key-0123456789\n"))
    assert main(["hash-key"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("my-long-api-key-0123456789")
    assert main(["hash-key", "--new"]) == 0
    key, digest = capsys.readouterr().out.split()
    assert len(key) >= 40 and digest == hash_key(key)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["hash-key"]) == 2
    assert "standard input" in capsys.readouterr().err


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    done = _cli("serve", "--host", "0.0.0.0", "--port", "1", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2
    assert "refusing to listen on '0.0.0.0' without API keys" in done.stderr
    assert "--allow-insecure-bind" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()


def test_serve_says_it_is_unauthenticated_and_loopback_only(tmp_path: Path) -> None:
    from tests.serverproc import free_port

    env = {**os.environ, "STT_LOG_LEVEL": "info", "STT_LOG_JSON": "true"}
    process = subprocess.Popen([sys.executable, "-m", "stt_server", "serve", "--port", str(free_port()),
                                "--data-dir", str(tmp_path / "d")], cwd=ROOT, env=env,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "auth_disabled" in line:
                assert "listening on 127.0.0.1 only" in line
                break
        else:
            pytest.fail("no auth_disabled line at start-up")
    finally:
        process.terminate()
        process.wait(30)
