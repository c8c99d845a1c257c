"""(f) The web page's first load: bytes on the wire for ``/`` and everything it loads eagerly.

Reuses the crawl of tests/test_ui_assets.py (index.html, its stylesheets, scripts, module
preloads and static imports), here against the real server process over TCP, so every header
the whole app adds (request ids, cache headers) counts too.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.client import LatencyModel, fake_upstream, remote_server
from benchmarks.harness import Chart, Outcome, Progress, Row
from tests.serverproc import ROOT
from tests.test_ui_assets import FIRST_LOAD_BUDGET, _first_load

STATIC = ROOT / "static"


@dataclass(frozen=True)
class FirstLoad:
    """Wire bytes per URL with gzip accepted, and the same page's total without compression."""

    by_url: dict[str, int]
    identity_bytes: int

    @property
    def total(self) -> int:
        return sum(self.by_url.values())


class _Session:
    """What the crawl needs of a test client: ``get(url, headers=...)``, here optionally without gzip."""

    def __init__(self, session: aiohttp.ClientSession, identity: bool) -> None:
        self.session, self.identity = session, identity

    def get(self, url: str, headers: dict[str, str] | None = None) -> Any:
        extra = {"Accept-Encoding": "identity"} if self.identity else {}
        return self.session.get(url, headers={**(headers or {}), **extra})


async def _crawl(base: str, identity: bool) -> dict[str, int]:
    async with aiohttp.ClientSession(base_url=base, auto_decompress=False) as session:
        return await _first_load(_Session(session, identity))  # type: ignore[arg-type]


def first_load(base: str) -> FirstLoad:
    """Crawl the first page of the server at ``base``, with gzip accepted and without."""
    gzipped = asyncio.run(_crawl(base, identity=False))
    identity = asyncio.run(_crawl(base, identity=True))
    return FirstLoad(gzipped, sum(identity.values()))


def measure() -> FirstLoad:
    """Start a server (remote engine: no model to load, the same app and UI) and crawl it."""
    with fake_upstream(LatencyModel(0, 0)) as fake, tempfile.TemporaryDirectory(prefix="bench-ui-") as data, \
            remote_server(Path(data), fake.base_url) as server:
        return first_load(server.base)


def budget_row(load: FirstLoad) -> Row:
    return Row("web UI", f"first-load bytes on the wire, gzip ({len(load.by_url)} requests)", f"{load.total:,} B",
               f"{load.identity_bytes:,} B uncompressed", load.identity_bytes / load.total, "× smaller",
               f"< {FIRST_LOAD_BUDGET:,} B", load.total < FIRST_LOAD_BUDGET)


def run(progress: Progress, repeat: int) -> Outcome:
    load = measure()
    static_bytes = sum(p.stat().st_size for p in STATIC.iterdir() if p.is_file() and p.suffix != ".py")
    rows = [budget_row(load),
            Row("web UI", "first-load bytes vs every file in static/, uncompressed", f"{load.total:,} B",
                f"{static_bytes:,} B", static_bytes / load.total, "× smaller")]
    chart = Chart("ui_first_load", "First page load, bytes on the wire per URL (gzip)",
                  [url.rsplit("/", 1)[-1] or "/" for url in load.by_url],
                  {"bytes": [float(n) for n in load.by_url.values()]}, "bytes")
    progress.step(f"{load.total} B in {len(load.by_url)} requests")
    return Outcome("ui", rows, [chart], {"by_url": load.by_url, "identity_bytes": load.identity_bytes,
                                          "static_bytes": static_bytes, "budget": FIRST_LOAD_BUDGET})
