"""One immutable settings object, built at the edge: config.toml, then STT_<SECTION>_<KEY> overrides."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace, is_dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "data"
    max_upload_bytes: int = 1_073_741_824
    max_duration_s: float = 6 * 3600.0
    upload_chunk_bytes: int = 262_144


@dataclass(frozen=True)
class QueueSettings:
    job_workers: int = 2
    max_queued: int = 1000
    ageing_s: float = 600.0


@dataclass(frozen=True)
class PipelineSettings:
    max_chunk_s: float = 30.0
    min_chunk_s: float = 10.0
    silence_search_s: float = 6.0
    silence_db: float = -40.0
    frame_s: float = 0.05
    chunk_concurrency: int = 0
    chunk_retries: int = 3
    retry_base_s: float = 0.5
    retry_max_s: float = 8.0
    ffmpeg_timeout_s: float = 600.0


@dataclass(frozen=True)
class LocalEngineSettings:
    model: str = "tiny.en"
    compute_type: str = "int8"
    workers: int = 2
    threads: int = 1
    beam_size: int = 1
    word_timestamps: bool = False


@dataclass(frozen=True)
class EngineSettings:
    default: str = "local"


@dataclass(frozen=True)
class CacheSettings:
    l1_max_entries: int = 2048
    l1_ttl_s: float = 3600.0
    l2_size_bytes: int = 1_073_741_824
    l3_ttl_s: float = 90 * 86400.0
    warm_entries: int = 512


@dataclass(frozen=True)
class OpenAISettings:
    priority: str = "high"


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    json: str = "auto"


@dataclass(frozen=True)
class WebhookSettings:
    # The secret itself stays out of this object (which may be printed); it is read from the
    # environment variable named here when the server starts. Unset or empty: sent unsigned.
    secret_env: str = "STT_WEBHOOK_SECRET"
    timeout_s: float = 10.0
    max_elapsed_s: float = 3600.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0


@dataclass(frozen=True)
class RetentionSettings:
    audio_ttl_s: float = 7 * 86400.0
    transcript_ttl_s: float = 30 * 86400.0
    spool_max_bytes: int = 20 * 1_073_741_824
    sweep_interval_s: float = 300.0


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    local: LocalEngineSettings = field(default_factory=LocalEngineSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    log: LogSettings = field(default_factory=LogSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    def with_overrides(self, **sections: Mapping[str, Any]) -> "Settings":
        """A copy with some keys of some sections replaced, e.g. ``server={"port": 0}``."""
        return _merge(self, {k: dict(v) for k, v in sections.items()})


def _coerce(value: Any, like: Any) -> Any:
    if isinstance(like, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return str(value) if not isinstance(value, str) else value


def _merge(settings: Settings, data: Mapping[str, Mapping[str, Any]]) -> Settings:
    changes: dict[str, Any] = {}
    for section in fields(settings):
        current = getattr(settings, section.name)
        values = data.get(section.name)
        if not values or not is_dataclass(current):
            continue
        known = {f.name: getattr(current, f.name) for f in fields(current)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown setting(s) in [{section.name}]: {', '.join(sorted(unknown))}")
        changes[section.name] = replace(current, **{k: _coerce(v, known[k]) for k, v in values.items()})
    return replace(settings, **changes)


def _env_overrides(environ: Mapping[str, str], settings: Settings) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for section in fields(settings):
        for key in fields(getattr(settings, section.name)):
            name = f"STT_{section.name}_{key.name}".upper()
            if name in environ:
                found.setdefault(section.name, {})[key.name] = environ[name]
    return found


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the TOML file (if any), then environment variables."""
    settings = Settings()
    if path is not None and Path(path).exists():
        with open(path, "rb") as fh:
            settings = _merge(settings, tomllib.load(fh))
    return _merge(settings, _env_overrides(os.environ if environ is None else environ, settings))
