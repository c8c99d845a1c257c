"""Turning a spooled upload into a queued job, shared by the jobs API, the OpenAI route and the CLI."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from stt_server.errors import BadRequest, InvalidAudio, PayloadTooLarge, TooManyRequests, Unavailable
from stt_server.jobs.events import TERMINAL_EVENTS
from stt_server.jobs.job import Job, Status, new_job_id, parse_priority
from stt_server.engines.base import Engine
from stt_server.audio.languages import check_capable, english_only, parse_language
from stt_server.audio.media import AudioInfo, probe
from stt_server.services import Services
from stt_server.jobs.spool import SpooledFile
from stt_server.jobs.webhook_target import url_refusal

MAX_FIELD_CHARS = 4096


@dataclass(frozen=True)
class JobOptions:
    language: str | None = None
    prompt: str | None = None
    priority: str = "normal"
    engine: str | None = None
    webhook_url: str | None = None
    owner: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    task: str = "transcribe"  # or "translate" (to English)


def parse_options(fields: dict[str, str], *, default_priority: str = "normal") -> JobOptions:
    """Validate the text fields of an upload."""
    for name, value in fields.items():
        if len(value) > MAX_FIELD_CHARS:
            raise BadRequest(f"field {name!r} is too long", param=name)
    language = parse_language(fields.get("language"))
    webhook = (fields.get("webhook_url") or "").strip() or None
    refusal = url_refusal(webhook) if webhook is not None else None
    if refusal:
        raise BadRequest(refusal, param="webhook_url", code="invalid_webhook_url")
    return JobOptions(
        language=language,
        prompt=(fields.get("prompt") or "").strip() or None,
        priority=parse_priority(fields.get("priority") or default_priority),
        engine=(fields.get("engine") or "").strip() or None,
        webhook_url=webhook,
    )


async def accept_upload(svc: Services, spooled: SpooledFile, filename: str, options: JobOptions) -> Job:
    """Probe, file and queue an upload; on any error nothing of it is left behind."""
    try:
        if not svc.accepting:
            raise Unavailable("the server is shutting down", headers={"Retry-After": "5"})
        engine = svc.engine_for(options.engine)
        check_capable(engine.model, engine.name, options.language, options.task,
                      [name for name, e in svc.engines.items() if not english_only(e.model)])
        if len(svc.queue) >= svc.queue.max_queued:
            raise TooManyRequests("the queue is full; try again later", headers={"Retry-After": "30"})
        info = await asyncio.to_thread(probe, spooled.temp_path)
        limit = svc.settings.server.max_duration_s
        if info.duration_s > limit:
            raise PayloadTooLarge(
                f"audio lasts {info.duration_s:.0f} s, over the limit of {limit:.0f} s", param="file",
                code="too_long")
        reserved = await _reserve_audio(svc, options.owner, info.duration_s)
    except BaseException:
        svc.spool.discard(spooled)
        raise
    try:
        # Past the spool's size limit: 507, and commit has discarded the upload.
        svc.spool.commit(spooled, max_bytes=svc.settings.retention.spool_max_bytes)
        try:
            return await _record(svc, spooled, filename, options, engine, info)
        finally:
            svc.spool.release(spooled.sha256)
    finally:
        _release_audio(svc, options.owner, reserved)  # the job row counts it from here on


async def _record(svc: Services, spooled: SpooledFile, filename: str, options: JobOptions, engine: Engine,
                  info: AudioInfo) -> Job:
    """The job row, its first event and its place in the queue, for audio the spool holds."""
    job = Job(
        id=new_job_id(), status=Status.QUEUED, priority=options.priority,
        filename=_safe_name(filename), size_bytes=spooled.size_bytes, sha256=spooled.sha256,
        duration_s=info.duration_s, engine=engine.name, model=engine.model, created_at=time.time(),
        language=options.language, prompt=options.prompt, webhook_url=options.webhook_url,
        owner=options.owner, temperature=options.temperature, word_timestamps=options.word_timestamps,
        container=info.format_name, task=options.task,
    )
    await svc.store.insert_job(job)
    await svc.bus.emit("job.created", job.id, filename=job.filename, size_bytes=job.size_bytes,
                       duration_s=round(info.duration_s, 3), codec=info.codec)
    await svc.enqueue(job, force=True)
    return job


async def _reserve_audio(svc: Services, owner: str | None, duration_s: float) -> float:
    """429 if ``owner`` would have more than ``max_queued_audio_s`` of audio queued or running;
    else hold ``duration_s`` for it until its job row is written (returned, to give back), so two
    uploads probed side by side cannot both slip under the quota."""
    quota = svc.settings.limits.max_queued_audio_s
    if owner is None or quota <= 0:
        return 0.0
    used = await svc.store.unfinished_audio_s(owner) + svc.audio_reserved.get(owner, 0.0)  # no await between
    if used + duration_s > quota:                                                # the sum and the hold
        raise TooManyRequests(f"too much audio waiting: at most {quota:.0f} s queued or running at once "
                              f"({used:.0f} s now); retry when some jobs have finished",
                              code="audio_quota", headers={"Retry-After": "60"})
    svc.audio_reserved[owner] = svc.audio_reserved.get(owner, 0.0) + duration_s
    return duration_s


def _release_audio(svc: Services, owner: str | None, seconds: float) -> None:
    """Give back a hold; an owner with nothing held leaves the map (owners without keys are addresses)."""
    if owner is None or not seconds:
        return
    left = svc.audio_reserved.get(owner, 0.0) - seconds
    if left > 1e-6:
        svc.audio_reserved[owner] = left
    else:
        svc.audio_reserved.pop(owner, None)


def _safe_name(filename: str | None) -> str:
    """Only ever shown, never used as a path: keep the last path component, printable, bounded."""
    name = (filename or "audio").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:255]
    return name or "audio"


async def wait_finished(svc: Services, job_id: str) -> Job:
    """Wait until a job ends and return it as stored."""
    events = svc.bus.subscribe(job_id)
    try:
        job = await svc.store.get_job(job_id)
        while job is not None and not job.status.finished:
            event = await events.get()
            if event.name in TERMINAL_EVENTS:
                job = await svc.store.get_job(job_id)
                break
    finally:
        svc.bus.unsubscribe(job_id, events)
    if job is None:
        raise InvalidAudio("the job was deleted")
    return job
