"""Headless Chromium for the UI tests: Debian's chromium, installed by apt-get when missing, driven by Playwright.

Playwright's own browser downloads are never used: the tests launch the
system binary through ``executable_path``, with a fresh profile per context.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import AsyncIterator

CHROMIUM = Path(os.environ.get("STT_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCK = Path(tempfile.gettempdir()) / "stt_server-chromium-install.lock"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def ensure_chromium() -> str | None:
    """Make sure Debian's chromium is installed; the reason it cannot be, or None when it is there."""
    if CHROMIUM.exists():
        return None
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and installing it needs root (apt-get install chromium)"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel runs wait here; the first one installs
        if CHROMIUM.exists():
            return None
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                return f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}"
    return None if CHROMIUM.exists() else f"chromium installed but {CHROMIUM} is still missing"


@contextlib.asynccontextmanager
async def browser_context(profile_dir: Path, **options: object) -> AsyncIterator[object]:
    """A persistent Playwright context over a fresh profile in ``profile_dir``; closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=str(CHROMIUM), args=ARGS, headless=True,
            accept_downloads=True, **options)
        try:
            yield context
        finally:
            await context.close()


def artifact(name: str) -> Path:
    """Where a screenshot or other test artefact goes (tests/artifacts/, ignored by git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
