"""One immutable settings object, built at the edge: config.toml, then STT_<SECTION>_<KEY> overrides."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .apikeys import ApiKey, parse_keys
from .upload_format import UploadFormat, upload_format


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "data"
    max_upload_bytes: int = 1_073_741_824
    max_duration_s: float = 6 * 3600.0
    upload_chunk_bytes: int = 262_144
    allow_unauthenticated_remote: bool = False


@dataclass(frozen=True)
class QueueSettings:
    job_workers: int = 2
    max_queued: int = 1000
    ageing_s: float = 600.0
    shutdown_grace_s: float = 30.0


@dataclass(frozen=True)
class PipelineSettings:
    max_chunk_s: float = 30.0
    min_chunk_s: float = 10.0
    silence_search_s: float = 6.0
    silence_db: float = -40.0
    frame_s: float = 0.05
    chunk_concurrency: int = 0
    decoders: int = 0
    chunk_retries: int = 3
    retry_base_s: float = 0.5
    retry_max_s: float = 8.0
    ffmpeg_timeout_s: float = 600.0


@dataclass(frozen=True)
class LocalEngineSettings:
    enabled: bool = True
    model: str = "tiny.en"
    compute_type: str = "int8"
    workers: int = 1
    threads: int = 2
    beam_size: int = 1
    best_of: int = 1
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
class AuthSettings:
    """API keys (hashes only); none configured: no authentication, and loopback-only."""

    keys: tuple[ApiKey, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", parse_keys(self.keys))  # tables or env text → ApiKey


@dataclass(frozen=True)
class LimitSettings:
    uploads_per_minute: float = 60.0
    upload_burst: int = 20
    max_unfinished_jobs: int = 100
    max_concurrent_uploads: int = 16
    upload_wait_s: float = 10.0


@dataclass(frozen=True)
class UpstreamSettings:
    """One OpenAI-compatible endpoint (``[[upstreams]]``). ``api_key_env`` names the variable holding its key;
    upstreams with the same ``engine`` serve one engine together."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    concurrency: int = 8
    # Off by default: benchmarks/upstream_protocol.py measured pooled HTTP/1.1 faster for every chunk
    # size, and concurrent large uploads on one HTTP/2 connection can stall in httpcore until timeout.
    http2: bool = False
    max_upload_bytes: int = 25 * 1024 * 1024
    max_chunk_s: float = 30.0  # vLLM clips audio at 30 s
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    retries: int = 4
    retry_base_s: float = 0.5
    retry_max_s: float = 10.0
    circuit_threshold: int = 5
    circuit_cooldown_s: float = 30.0
    verify_tls: bool | str = True  # or the path of a CA bundle
    engine: str = "openai"
    # Opus at 32 kb/s: an eighth of WAV's bytes with the same WER (README, Engines).
    upload_format: str = "opus"
    upload_bitrate: float = 32.0  # kb/s, for opus and mp3

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"upstream {self.name}: base_url must start with http:// or https://")
        if self.concurrency < 1 or self.retries < 0:
            raise ValueError(f"upstream {self.name}: concurrency must be >= 1 and retries >= 0")
        try:
            self.wire_format
        except ValueError as exc:
            raise ValueError(f"upstream {self.name}: {exc}") from None

    @property
    def wire_format(self) -> UploadFormat:
        """The format chunks are uploaded in to this upstream (until it refuses it)."""
        return upload_format(self.upload_format, self.upload_bitrate)


def upstreams_from_config(items: Iterable[Mapping[str, Any] | UpstreamSettings]) -> tuple[UpstreamSettings, ...]:
    """UpstreamSettings from config tables (``[[upstreams]]`` in config.toml); built ones pass through."""
    if isinstance(items, Mapping):
        raise ValueError("upstreams must be an array of tables: write [[upstreams]], not [upstreams]")
    built = []
    for number, item in enumerate(items, 1):
        if isinstance(item, UpstreamSettings):
            built.append(item)
            continue
        unknown = sorted(set(item) - {f.name for f in fields(UpstreamSettings)})
        if unknown:
            raise ValueError(f"unknown upstream setting(s) in [[upstreams]] #{number}: {', '.join(unknown)}")
        try:
            built.append(UpstreamSettings(**item))
        except TypeError as exc:  # a required key is missing
            raise ValueError(f"[[upstreams]] #{number}: {exc}") from None
    return tuple(built)


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
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    upstreams: tuple[UpstreamSettings, ...] = ()

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    def with_overrides(self, **sections: Any) -> "Settings":
        """A copy with some keys of some sections replaced, e.g. ``server={"port": 0}``;
        ``upstreams=[...]`` (tables or UpstreamSettings) replaces the upstreams."""
        return _merge(self, {k: dict(v) if isinstance(v, Mapping) else v for k, v in sections.items()})


def _coerce(value: Any, like: Any) -> Any:
    if isinstance(like, tuple):
        return value  # a list setting: its section's __post_init__ parses it
    if isinstance(like, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return str(value) if not isinstance(value, str) else value


def _merge(settings: Settings, data: Mapping[str, Any]) -> Settings:
    changes: dict[str, Any] = {}
    if "upstreams" in data:
        changes["upstreams"] = upstreams_from_config(data["upstreams"])
    for section in fields(settings):
        current = getattr(settings, section.name)
        values = data.get(section.name)
        if not values or not is_dataclass(current) or isinstance(current, type):
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
        if not is_dataclass(current := getattr(settings, section.name)):
            continue  # [[upstreams]] come from the file only (their keys stay in api_key_env variables)
        for key in fields(current):
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
