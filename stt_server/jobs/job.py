"""The Job record, its statuses and priorities, and how it is shown over the API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from stt_server.errors import BadRequest


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


PRIORITIES = ("high", "normal", "low")


def parse_priority(value: str | None) -> str:
    """Validate a priority field; an absent one is ``normal``."""
    if value is None or value == "":
        return "normal"
    value = value.strip().lower()
    if value not in PRIORITIES:
        raise BadRequest(f"unknown priority {value!r}; use one of {', '.join(PRIORITIES)}", param="priority")
    return value


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class Job:
    id: str
    status: Status
    priority: str
    filename: str
    size_bytes: int
    sha256: str
    duration_s: float
    engine: str
    model: str
    created_at: float
    language: str | None = None
    prompt: str | None = None
    webhook_url: str | None = None
    owner: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    task: str = "transcribe"
    chunks_total: int = 0
    chunks_done: int = 0
    cached: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    container: str | None = None  # the probed container (FFmpeg's demuxer name)
    extra: dict[str, Any] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> "Job":
        return replace(self, **changes)

    def to_api(self, position: int | None = None) -> dict[str, Any]:
        """The job as ``GET /v1/jobs/{id}`` shows it."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "transcription.job",
            "status": self.status.value,
            "priority": self.priority,
            "filename": self.filename,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "duration_s": round(self.duration_s, 3),
            "engine": self.engine,
            "model": self.model,
            "language": self.language,
            "task": self.task,
            "progress": {"chunks_total": self.chunks_total, "chunks_done": self.chunks_done},
            "cached": self.cached,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }
        if position is not None:
            body["queue_position"] = position
        return body
