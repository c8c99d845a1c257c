"""The jobs API: upload, look up, list, stream events, fetch transcripts and audio, delete."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from aiohttp import web

from stt_server.http.auth import owned_job, owner_scope
from stt_server.errors import BadRequest, Conflict, Gone, NotFound
from stt_server.jobs.events import TERMINAL_EVENTS, Event
from stt_server.audio.formats import FORMATS, render
from stt_server.http.httpsec import audio_content_type, content_disposition
from stt_server.jobs.intake import accept_upload, parse_options
from stt_server.jobs.job import Status
from stt_server.http.limits import STREAM_GATE, UPLOAD_GATE
from stt_server.jobs.events import EventBus
from stt_server.services import BUS, QUEUE, SERVICES, SPOOL, STORE
from stt_server.audio.transcript import Transcript
from stt_server.jobs.webhook_target import check_webhook_url
from stt_server.jobs.webhooks import webhook_view
from stt_server.http.routes.multipart import read_upload, requester

routes = web.RouteTableDef()
KEEPALIVE_S = 15.0
MAX_SQL_INT = 2**63 - 1


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]  # taking an upload spans the store, the spool, the queue and the engines
    owner = requester(request)
    async with request.app[UPLOAD_GATE].admit(owner, svc.store):
        spooled, filename, fields = await read_upload(request, svc.settings.server, svc.spool)
        try:
            options = replace(parse_options(fields), owner=owner)
            if options.webhook_url:
                await check_webhook_url(options.webhook_url, svc.settings.webhook)
        except BaseException:
            svc.spool.discard(spooled)
            raise
        job = await accept_upload(svc, spooled, filename, options)
    body = job.to_api(position=svc.queue.position(job.id))
    return web.json_response(body, status=202, headers={"Location": f"/v1/jobs/{job.id}"})


@routes.get("/v1/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    store = request.app[STORE]
    job = await owned_job(request, store, request.match_info["id"])
    body = job.to_api(position=request.app[QUEUE].position(job.id))
    if job.webhook_url:
        body["webhook"] = webhook_view(job.webhook_url, await store.webhook_attempts(job.id))
    return web.json_response(body)


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in Status}:
        raise BadRequest(f"unknown status {status!r}", param="status")
    try:
        limit = int(request.query.get("limit", "20"))
        cursor = int(request.query["after"]) if request.query.get("after") else None
    except ValueError:
        raise BadRequest("limit and after must be integers", param="limit") from None
    if not 1 <= limit <= 100:
        raise BadRequest("limit must be between 1 and 100", param="limit")
    if cursor is not None and not 0 <= cursor <= MAX_SQL_INT:  # found by fuzzing: SQLite overflowed
        raise BadRequest("after is out of range", param="after")
    rows = await request.app[STORE].list_jobs(status=status, limit=limit + 1, before_seq=cursor,
                                              owner=owner_scope(request))
    page = rows[:limit]
    more = len(rows) > limit
    positions = request.app[QUEUE].positions() if any(job.status is Status.QUEUED for _, job in page) else {}
    return web.json_response({
        "object": "list",
        "data": [job.to_api(position=positions.get(job.id)) for _, job in page],
        "has_more": more,
        "next_cursor": str(page[-1][0]) if more and page else None,
    })


@routes.get("/v1/jobs/{id}/transcript")
async def get_transcript(request: web.Request) -> web.Response:
    store = request.app[STORE]
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise BadRequest(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", param="format")
    job = await owned_job(request, store, request.match_info["id"])
    if job.status is not Status.COMPLETED:
        raise Conflict(f"job {job.id} is {job.status.value}; the transcript exists once it is completed")
    stored = await store.get_transcript(job.id)
    if stored is None:
        if await store.transcript_deleted_at(job.id) is not None:
            raise Gone(f"the transcript of job {job.id} was deleted after its retention period")
        raise NotFound(f"job {job.id} has no transcript")
    body, content_type = render(Transcript.from_dict(stored), fmt, task=job.task)
    response = web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8")
    if request.query.get("download"):
        stem = job.filename.rsplit(".", 1)[0] or "transcript"
        ext = "json" if fmt.endswith("json") else ("txt" if fmt == "text" else fmt)
        response.headers["Content-Disposition"] = content_disposition("attachment", f"{stem}.{ext}")
    return response


@routes.get("/v1/jobs/{id}/audio")
async def job_audio(request: web.Request) -> web.StreamResponse:
    """The job's uploaded audio, as stored in the spool; Range requests get 206 (seeking in <audio>).

    Its type is the probed container's (never guessed from the uploaded name, which the uploader
    chose), and the security headers sandbox it if it is opened as a page."""
    job_id = request.match_info["id"]
    job = await owned_job(request, request.app[STORE], job_id)
    path = request.app[SPOOL].path_for(job.sha256)
    if not path.is_file():
        raise NotFound(f"the audio of job {job_id} is no longer stored", param="id", code="audio_missing")
    return web.FileResponse(path, headers={
        "Content-Type": audio_content_type(job.container),
        "Content-Disposition": content_disposition("inline", job.filename),
        "Cache-Control": "private, max-age=300",
    })


def _sse(event: Event) -> bytes:
    payload = json.dumps(event.to_dict())
    return f"id: {event.id}\nevent: {event.name}\ndata: {payload}\n\n".encode()


async def _ended_before(bus: EventBus, job_id: str, last_id: int) -> bool:
    return any(e.name in TERMINAL_EVENTS and e.id <= last_id for e in await bus.history(job_id))


@routes.get("/v1/jobs/{id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["id"]
    await owned_job(request, request.app[STORE], job_id)
    try:
        last_id = int(request.headers.get("Last-Event-ID") or request.query.get("after") or 0)
    except ValueError:
        raise BadRequest("Last-Event-ID must be an integer", param="Last-Event-ID") from None
    last_id = min(max(last_id, 0), MAX_SQL_INT)  # past the last possible id: nothing to replay
    with request.app[STREAM_GATE].admit(requester(request)):
        return await _stream(request, request.app[BUS], job_id, last_id)


async def _stream(request: web.Request, bus: EventBus, job_id: str, last_id: int) -> web.StreamResponse:
    live = bus.subscribe(job_id)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        replay = await bus.history(job_id, last_id)
        for event in replay:
            await response.write(_sse(event))
            last_id = event.id
            if event.name in TERMINAL_EVENTS:
                return response
        if not replay and last_id and await _ended_before(bus, job_id, last_id):
            return response  # the client already has the job's last event: nothing more will come
        while True:
            try:
                event = await asyncio.wait_for(live.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if event.id <= last_id:
                continue
            await response.write(_sse(event))
            last_id = event.id
            if event.name in TERMINAL_EVENTS:
                return response
    except OSError:  # the client went away, before the headers (in prepare) or after
        return response
    finally:
        bus.unsubscribe(job_id, live)


@routes.delete("/v1/jobs/{id}")
async def delete_job(request: web.Request) -> web.Response:
    """A queued or running job is cancelled (it stays, ``cancelled``, without its audio); a finished
    job is deleted with its audio, transcript and cache entries."""
    svc = request.app[SERVICES]  # a cancel or a delete spans the lifecycle, the queue, the workers and the cache
    job = await owned_job(request, svc.store, request.match_info["id"])
    if not job.status.finished:
        await svc.cancel(job)
    else:
        await svc.delete(job)
    return web.Response(status=204)
