"""OpenAI's audio API, inbound: existing clients and SDKs work against this server unchanged.

Requests run through the same queue, cache and chunking as jobs (at the configured priority), so
long files work here too; the response is given when the job ends, or streamed as it goes
(``stream=true``: Server-Sent Events, each chunk's text as soon as every earlier chunk is done).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stt_server.engines.base import Engine
from stt_server.errors import EngineError, NotFound, STTError
from stt_server.audio.formats import render
from stt_server.jobs.intake import JobOptions, accept_upload, parse_options, wait_finished
from stt_server.jobs.job import Job, Status
from stt_server.http.limits import UPLOAD_GATE
from stt_server.http.openai_request import TRANSCRIBE, TRANSLATE, OpenAIRequest, parse_request
from stt_server.http.openai_stream import stream_transcript
from stt_server.services import SERVICES, Services
from stt_server.settings import DEFAULT_ENGINE
from stt_server.audio.transcript import Transcript
from stt_server.http.routes.multipart import read_upload, requester

routes = web.RouteTableDef()

# GET /v1/models gives every model this fixed creation time (Whisper's release, 2022-09-21), not
# the server's start: clients that cache model metadata see the same record every time.
MODEL_CREATED = 1663718400


def _alias_engine(svc: Services, target: str) -> Engine:
    return svc.engine_for(None if target == DEFAULT_ENGINE else target)


def engine_for_model(svc: Services, model: str) -> Engine:
    """The engine an OpenAI model name means: an alias from ``[openai.aliases]``, an engine's name,
    or an engine's model; else 404 ``model_not_found``."""
    aliases = dict(svc.settings.openai.aliases)
    if model in aliases:
        return _alias_engine(svc, aliases[model])
    for name, engine in svc.engines.items():
        if model in (name, engine.model):
            return engine
    raise NotFound(f"the model {model!r} does not exist on this server; see GET /v1/models",
                   param="model", code="model_not_found")


async def _serve(request: web.Request, task: str) -> web.StreamResponse:
    svc = request.app[SERVICES]
    owner = requester(request)
    async with request.app[UPLOAD_GATE].admit(owner, svc.store):  # not held while transcribing
        spooled, filename, fields = await read_upload(request, svc.settings.server, svc.spool)
        try:
            req = parse_request(fields, task)
            engine = engine_for_model(svc, req.model)
            base = parse_options({k: v for k, v in fields.items() if k == "prompt"},
                                 default_priority=svc.settings.openai.priority)
            options = JobOptions(language=req.language, prompt=base.prompt, priority=base.priority,
                                 engine=engine.name, temperature=req.temperature, word_timestamps=req.words,
                                 owner=owner, task=req.task)
        except BaseException:
            svc.spool.discard(spooled)
            raise
        job = await accept_upload(svc, spooled, filename, options)
    if req.stream:
        return await stream_transcript(request, svc, job)
    return await _respond(svc, await wait_finished(svc, job.id), req)


async def _respond(svc: Services, job: Job, req: OpenAIRequest) -> web.Response:
    if job.status is not Status.COMPLETED:
        raise EngineError(f"transcription {job.status.value}: {job.error or 'no reason given'}")
    stored = await svc.store.get_transcript(job.id)
    if stored is None:
        raise STTError("the transcript is missing")
    body, content_type = render(Transcript.from_dict(stored), req.response_format, task=req.task, words=req.words)
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8",
                        headers={"X-Job-Id": job.id})


@routes.post("/v1/audio/transcriptions")
async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, TRANSCRIBE)


@routes.post("/v1/audio/translations")
async def translations(request: web.Request) -> web.StreamResponse:
    """Speech in any language, as English text (engines that can translate)."""
    return await _serve(request, TRANSLATE)


def _model(model_id: str, engine: Engine) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": f"stt_server:{engine.name}",
            "engine": engine.name, "ready": engine.ready}


def _models(svc: Services) -> dict[str, dict[str, Any]]:
    """Every model id this server answers to: the engines' models, then the aliases."""
    models = {engine.model: _model(engine.model, engine) for engine in svc.engines.values()}
    for alias, target in svc.settings.openai.aliases:
        if target == DEFAULT_ENGINE or target in svc.engines:
            models.setdefault(alias, _model(alias, _alias_engine(svc, target)))
    return models


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": list(_models(request.app[SERVICES]).values())})


@routes.get("/v1/models/{id:.+}")
async def model(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    model_id = request.match_info["id"]
    known = _models(svc).get(model_id)
    return web.json_response(known or _model(model_id, engine_for_model(svc, model_id)))
