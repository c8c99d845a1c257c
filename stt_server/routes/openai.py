"""OpenAI's transcription API, inbound: existing clients and SDKs work against this server unchanged.

Requests run through the same queue, cache and chunking as jobs (at the configured priority), so
long files work here too; the response is given when the job ends.
"""

from __future__ import annotations

from aiohttp import web

from ..engines.base import Engine
from ..errors import BadRequest, EngineError, NotFound, STTError
from ..formats import FORMATS, render
from ..intake import JobOptions, accept_upload, parse_options, wait_finished
from ..job import Status
from ..limits import UPLOAD_GATE
from ..services import SERVICES, Services
from ..transcript import Transcript
from .multipart import read_upload, requester

routes = web.RouteTableDef()

# Clients written for OpenAI send its model name; it means "this server's default engine".
DEFAULT_ALIASES = ("whisper-1",)
GRANULARITIES = ("segment", "word")


def _engine_for_model(svc: Services, model: str | None) -> Engine:
    if not model:
        raise BadRequest("missing required field 'model'", param="model")
    if model in DEFAULT_ALIASES:
        return svc.engine_for(None)
    for name, engine in svc.engines.items():
        if model in (name, engine.model):
            return engine
    raise NotFound(f"the model {model!r} does not exist on this server; see GET /v1/models",
                   param="model", code="model_not_found")


def _options(svc: Services, fields: dict[str, str], engine: Engine,
             owner: str) -> tuple[JobOptions, str, bool]:
    fmt = (fields.get("response_format") or "json").strip()
    if fmt not in FORMATS:
        raise BadRequest(f"unknown response_format {fmt!r}; use one of {', '.join(FORMATS)}",
                         param="response_format")
    try:
        temperature = float(fields.get("temperature") or 0.0)
    except ValueError:
        raise BadRequest("temperature must be a number", param="temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise BadRequest("temperature must be between 0 and 1", param="temperature")
    raw = fields.get("timestamp_granularities[]") or fields.get("timestamp_granularities") or ""
    granularities = {g.strip() for g in raw.split(",") if g.strip()}
    if granularities - set(GRANULARITIES):
        raise BadRequest(f"timestamp_granularities must be among {', '.join(GRANULARITIES)}",
                         param="timestamp_granularities[]")
    words = "word" in granularities
    if words and fmt != "verbose_json":
        raise BadRequest("word timestamps need response_format=verbose_json",
                         param="timestamp_granularities[]")
    base = parse_options({k: v for k, v in fields.items() if k in ("language", "prompt")},
                         default_priority=svc.settings.openai.priority)
    options = JobOptions(language=base.language, prompt=base.prompt, priority=base.priority,
                         engine=engine.name, temperature=temperature, word_timestamps=words, owner=owner)
    return options, fmt, words


@routes.post("/v1/audio/transcriptions")
async def transcriptions(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    owner = requester(request)
    async with request.app[UPLOAD_GATE].admit(owner, svc.store):  # not held while transcribing
        spooled, filename, fields = await read_upload(request, svc)
        try:
            engine = _engine_for_model(svc, fields.get("model"))
            options, fmt, words = _options(svc, fields, engine, owner)
        except BaseException:
            svc.spool.discard(spooled)
            raise
        job = await accept_upload(svc, spooled, filename, options)
    job = await wait_finished(svc, job.id)
    if job.status is not Status.COMPLETED:
        raise EngineError(f"transcription {job.status.value}: {job.error or 'no reason given'}")
    stored = await svc.store.get_transcript(job.id)
    if stored is None:
        raise STTError("the transcript is missing")
    body, content_type = render(Transcript.from_dict(stored), fmt, words=words)
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8",
                        headers={"X-Job-Id": job.id})


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    created = int(svc.started_at)
    data = []
    for name, engine in svc.engines.items():
        data.append({"id": engine.model, "object": "model", "created": created, "owned_by": f"stt_server:{name}",
                     "engine": name, "ready": engine.ready})
    default = svc.engine_for(None)
    data += [{"id": alias, "object": "model", "created": created, "owned_by": "stt_server",
              "engine": default.name, "ready": default.ready} for alias in DEFAULT_ALIASES]
    return web.json_response({"object": "list", "data": data})


@routes.get("/v1/models/{id:.+}")
async def model(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    engine = _engine_for_model(svc, request.match_info["id"])
    return web.json_response({"id": request.match_info["id"], "object": "model", "created": int(svc.started_at),
                              "owned_by": f"stt_server:{engine.name}"})
