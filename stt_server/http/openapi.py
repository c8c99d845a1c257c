"""The OpenAPI 3 description of the whole HTTP API, written by hand, served at ``GET /openapi.json``.

tests/test_openapi.py checks that every route of the app is described here and nothing else is,
and runs schemathesis against a live server from this document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stt_server import __version__
from stt_server.audio.formats import FORMATS
from stt_server.jobs.job import PRIORITIES, Status

Schema = dict[str, Any]
ERROR_STATUSES = {400: "Bad request", 401: "Missing or invalid API key",
                  403: "Needs an admin API key, or a write sent by a web page of another origin",
                  404: "Not found", 408: "The request body arrived too slowly", 409: "Not ready yet",
                  410: "Deleted after its retention period", 413: "Too large or too long",
                  415: "The body must be application/json",
                  421: "Without API keys, only loopback host names and server.allowed_hosts are served",
                  429: "Rate limited (see Retry-After)",
                  502: "The engine failed", 503: "Busy, loading or shutting down (see Retry-After)",
                  507: "The audio spool is full"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: str = "", nullable: str = "", **props: Schema) -> Schema:
    """An object schema; ``required``/``nullable`` name properties, space-separated."""
    for name in nullable.split():
        props[name] = {**props[name], "nullable": True}
    return {"type": "object", "properties": props, "required": required.split()} if required else \
        {"type": "object", "properties": props}


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
JSON_ANY = {"application/json": {"schema": ANY_OBJECT}}
TEXT = {"text/plain": {"schema": STR}}
TRANSCRIPT_TYPES = {"application/json": {"schema": _ref("Transcript")}, **TEXT}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj("error", error=_obj("message type param code", "param code",
                                      message=STR, type=STR, param=STR, code=STR)),
    "Job": _obj("id object status priority filename size_bytes sha256 duration_s engine model language "
                "progress cached created_at started_at finished_at error",
                "language started_at finished_at error queue_position",
                id=STR, object=STR, status={"type": "string", "enum": [s.value for s in Status]},
                priority={"type": "string", "enum": list(PRIORITIES)}, filename=STR, size_bytes=INT,
                sha256=STR, duration_s=NUM, engine=STR, model=STR, language=STR,
                task={"type": "string", "enum": ["transcribe", "translate"]},
                progress=_obj("chunks_total chunks_done", chunks_total=INT, chunks_done=INT),
                cached=BOOL, created_at=NUM, started_at=NUM, finished_at=NUM, error=STR,
                queue_position=INT, webhook=ANY_OBJECT),
    "JobList": _obj("object data has_more next_cursor", "next_cursor", object=STR,
                    data={"type": "array", "items": _ref("Job")}, has_more=BOOL, next_cursor=STR),
    "Transcript": _obj("text", text=STR, language=STR, duration=NUM, task=STR,
                       segments={"type": "array", "items": ANY_OBJECT}, words={"type": "array", "items": ANY_OBJECT}),
    "Model": _obj("id object created owned_by", id=STR, object=STR, created=INT, owned_by=STR,
                  engine=STR, ready=BOOL),
    "AudioLink": _obj("url expires_at", url=STR, expires_at=INT),
    "Me": _obj("key_id role keys_required", "key_id", key_id=STR, role={"type": "string", "enum": ["user", "admin"]},
               keys_required=BOOL),
    "ModelList": _obj("object data", object=STR, data={"type": "array", "items": _ref("Model")}),
    "Upload": _obj("file", file={"type": "string", "format": "binary"}, language=STR, prompt=STR,
                   priority={"type": "string", "enum": list(PRIORITIES)}, engine=STR,
                   webhook_url={"type": "string", "format": "uri"}),
    "Invalidate": {**_obj(key=STR, job_id=STR, engine=STR, model=STR, all=BOOL), "minProperties": 1,
                   "additionalProperties": False},
    "TranscriptionRequest": _obj(
        "file model", file={"type": "string", "format": "binary"}, model=STR, language=STR, prompt=STR,
        response_format={"type": "string", "enum": list(FORMATS)},
        temperature={"type": "number", "minimum": 0, "maximum": 1}, stream=BOOL,
        chunking_strategy={"type": "string", "description": '"auto" or a server_vad object as JSON'}),
    "TranslationRequest": _obj(
        "file model", file={"type": "string", "format": "binary"}, model=STR, prompt=STR,
        language={"type": "string", "description": "The spoken language, if known (detected otherwise)"},
        response_format={"type": "string", "enum": list(FORMATS)},
        temperature={"type": "number", "minimum": 0, "maximum": 1}),
}
SCHEMAS["TranscriptionRequest"]["properties"].update({  # not Python names
    "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment", "word"]}},
    "include[]": {"type": "array", "items": {"type": "string", "enum": ["logprobs"]},
                  "description": "Refused with a 400: no engine here gives per-token log probabilities"}})


def _param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


JOB_ID = _param("id", "path", STR, "The job's id (`job_` and 24 hex digits).")


def _op(summary: str, ok: tuple[int, str, dict[str, Any] | None], errors: str = "",
        params: tuple[Schema, ...] = (), body: Schema | None = None, public: bool = False,
        headers: dict[str, Schema] | None = None, body_type: str = "multipart/form-data") -> Schema:
    """One operation: its success response, the error statuses it may answer (space-separated)."""
    status, description, content = ok
    success: Schema = {"description": description}
    if content is not None:
        success["content"] = content
    if headers:
        success["headers"] = headers
    codes = {int(c) for c in errors.split()} | ({401} if not public else set()) | {421}
    op: Schema = {"summary": summary, "parameters": list(params),
                  "responses": {str(status): success,
                                **{str(c): {"$ref": f"#/components/responses/E{c}"} for c in sorted(codes)}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {body_type: {"schema": body}}}
    if public:
        op["security"] = []
    return op


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


PATHS: dict[str, dict[str, Schema]] = {
    "/healthz": {"get": _op("Liveness: the process answers", (200, "Alive", JSON_ANY), public=True)},
    "/readyz": {"get": _op("Readiness: store open, engines loaded, not shutting down",
                           (200, "Ready", JSON_ANY), "503", public=True)},
    "/metrics": {"get": _op("Prometheus text format (admin)", (200, "Metrics", TEXT), "403")},
    "/openapi.json": {"get": _op("This document", (200, "The OpenAPI document", JSON_ANY), public=True)},
    "/v1/admin/stats": {"get": _op("Queue, workers, caches, engines, event-loop lag (admin)",
                                   (200, "Statistics", JSON_ANY), "403")},
    "/v1/admin/cache/invalidate": {"post": _op(
        "Invalidate cache entries by key, job, engine/model, or all, in every tier (admin)",
        (200, "How many entries were removed", JSON_ANY), "400 403 404 415", body=_ref("Invalidate"),
        body_type="application/json")},
    "/v1/jobs": {
        "post": _op("Upload audio and queue a transcription job", (202, "Queued", _json("Job")),
                    "400 403 408 413 429 503 507", body=_ref("Upload"), headers={"Location": {"schema": STR}}),
        "get": _op("The jobs this key may see, newest first", (200, "A page of jobs", _json("JobList")), "400",
                   params=(_param("status", "query", {"type": "string", "enum": [s.value for s in Status]}, "Only these"),
                           _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, "Page size"),
                           _param("after", "query", {"type": "integer"}, "next_cursor of the previous page")))},
    "/v1/jobs/{id}": {
        "get": _op("One job", (200, "The job", _json("Job")), "404", params=(JOB_ID,)),
        "delete": _op("Cancel a job and delete its audio and transcript", (204, "Deleted", None), "403 404",
                      params=(JOB_ID,))},
    "/v1/jobs/{id}/transcript": {"get": _op(
        "The transcript of a completed job", (200, "The transcript", TRANSCRIPT_TYPES), "400 404 409 410",
        params=(JOB_ID, _param("format", "query", {"type": "string", "enum": list(FORMATS)}, "Response format"),
                _param("download", "query", STR, "Any value: sent as an attachment")))},
    "/v1/jobs/{id}/events": {"get": _op(
        "Server-Sent Events of the job, past ones first", (200, "An event stream", {"text/event-stream": {"schema": STR}}),
        "400 404 429", params=(JOB_ID, _param("after", "query", {"type": "integer"}, "Resume after this event id"),
                           _param("Last-Event-ID", "header", {"type": "integer"}, "Resume after this event id")))},
    "/v1/jobs/{id}/audio": {"get": _op(
        "The job's uploaded audio (Range requests supported); with a Bearer key, or a link from audio-url",
        (200, "The audio", {"application/octet-stream": {"schema": STR}}), "404",
        params=(JOB_ID, _param("kid", "query", STR, "Signed link: the key id"),
                _param("exp", "query", {"type": "integer"}, "Signed link: expiry, Unix time"),
                _param("sig", "query", STR, "Signed link: HMAC-SHA256 over job id, key id and expiry")))},
    "/v1/jobs/{id}/audio-url": {"post": _op(
        "A link to the job's audio valid for a few minutes without a header (for an <audio> element)",
        (200, "The link", _json("AudioLink")), "404", params=(JOB_ID,))},
    "/v1/me": {"get": _op("The calling key's id and role, and whether the server requires keys",
                          (200, "Who is asking", _json("Me")))},
    "/v1/audio/transcriptions": {"post": _op(
        "OpenAI-compatible transcription: synchronous, or Server-Sent Events with stream=true",
        (200, "The transcript", {**TRANSCRIPT_TYPES, "text/event-stream": {"schema": STR}}),
        "400 403 404 408 413 429 502 503 507", body=_ref("TranscriptionRequest"))},
    "/v1/audio/translations": {"post": _op(
        "OpenAI-compatible translation into English, synchronous", (200, "The English transcript", TRANSCRIPT_TYPES),
        "400 403 404 408 413 429 502 503 507", body=_ref("TranslationRequest"))},
    "/v1/models": {"get": _op("The models this server offers", (200, "Models", _json("ModelList")))},
    "/v1/models/{id}": {"get": _op("One model", (200, "The model", _json("Model")), "404",
                                   params=(_param("id", "path", STR, "Model id or engine name"),))},
    "/": {"get": _op("The web UI", (200, "index.html", {"text/html": {"schema": STR}}), public=True)},
    "/static/{name}": {"get": _op("A file of the web UI", (200, "The file", {"*/*": {"schema": STR}}), "404",
                                  params=(_param("name", "path", STR, "File name, plain or fingerprinted"),),
                                  public=True)},
}


def document() -> dict[str, Any]:
    """The OpenAPI document (its parts are shared: read it, do not change it)."""
    responses = {f"E{code}": {"description": text, "content": _json("Error")}
                 for code, text in ERROR_STATUSES.items()}
    return {
        "openapi": "3.0.3",
        "info": {"title": "stt_server", "version": __version__,
                 "description": "Self-hosted speech-to-text. Every error is JSON in OpenAI's shape. API keys "
                                "(Bearer) are needed only when the server has keys configured."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "responses": responses,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())
