"""``stream=true`` on the OpenAI route: the job's progressive text as OpenAI's transcript events.

``transcript.text.delta`` carries each chunk's text as soon as every earlier chunk is done (the
pipeline's ``transcript.delta`` events), then ``transcript.text.done`` the whole text and its
usage. A client that goes away stops nothing: the job runs on, finishes and is cached.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from aiohttp import web

from stt_server.audio.deltas import DELTA_EVENT
from stt_server.errors import EngineError, STTError
from stt_server.jobs.events import TERMINAL_EVENTS, Event, EventBus
from stt_server.audio.formats import usage
from stt_server.jobs.job import Job, Status
from stt_server.services import Services
from stt_server.audio.transcript import Transcript

KEEPALIVE_S = 15.0


async def follow(bus: EventBus, job_id: str, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[Event | None]:
    """The job's events, past ones first, until its terminal one; ``None`` after ``keepalive_s`` of quiet."""
    live = bus.subscribe(job_id)  # before reading the past, so nothing falls between the two
    try:
        last_id = 0
        for event in await bus.history(job_id):
            last_id = event.id
            yield event
            if event.name in TERMINAL_EVENTS:
                return
        while True:
            try:
                event = await asyncio.wait_for(live.get(), keepalive_s)
            except asyncio.TimeoutError:
                yield None
                continue
            if event.id <= last_id:
                continue
            last_id = event.id
            yield event
            if event.name in TERMINAL_EVENTS:
                return
    finally:
        bus.unsubscribe(job_id, live)


def sse_data(payload: dict[str, Any]) -> bytes:
    """One Server-Sent Event with only a ``data`` line, as OpenAI sends them."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def delta_event(text: str) -> dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": text}


def done_event(transcript: Transcript) -> dict[str, Any]:
    return {"type": "transcript.text.done", "text": transcript.text, "usage": usage(transcript.duration)}


async def _final(svc: Services, job: Job) -> dict[str, Any]:
    """The closing event: the whole text, or the error (which the SDKs raise)."""
    current = await svc.store.get_job(job.id)
    stored = await svc.store.get_transcript(job.id) if current is not None else None
    if current is None or current.status is not Status.COMPLETED or stored is None:
        reason = (current.error if current is not None else None) or "no reason given"
        status = current.status.value if current is not None else "deleted"
        return EngineError(f"transcription {status}: {reason}").body()
    return done_event(Transcript.from_dict(stored))


async def stream_transcript(request: web.Request, svc: Services, job: Job) -> web.StreamResponse:
    """Answer with the job's text as it comes (``text/event-stream``)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no", "X-Job-Id": job.id})
    await response.prepare(request)
    try:
        async for event in follow(svc.bus, job.id):
            if event is None:
                await response.write(b": keep-alive\n\n")
            elif event.name == DELTA_EVENT:
                await response.write(sse_data(delta_event(str(event.data.get("text", "")))))
        await response.write(sse_data(await _final(svc, job)))
    except (ConnectionResetError, STTError):
        pass  # the client left (or the job vanished): the job itself carries on regardless
    return response
