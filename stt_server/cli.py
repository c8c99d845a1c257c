"""The ``stt-server`` command: ``serve`` the HTTP API, or ``transcribe`` a file in-process."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from stt_server.http.apikeys import hash_key
from stt_server.http.descriptors import raise_nofile_limit
from stt_server.errors import StartupError, STTError
from stt_server.audio.formats import FORMATS, render
from stt_server.jobs.intake import JobOptions, accept_upload, wait_finished
from stt_server.audio.languages import parse_language
from stt_server.observability.logs import configure_logging
from stt_server.observability.memory import tune_malloc
from stt_server.services import Services, open_services
from stt_server.settings import Settings, load_settings, render_config
from stt_server.audio.transcript import Transcript

DEFAULT_CONFIG = "config.toml"


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    server = settings.server
    if getattr(args, "host", None):
        server = replace(server, host=args.host)
    if getattr(args, "port", None) is not None:
        server = replace(server, port=args.port)
    if args.data_dir:
        server = replace(server, data_dir=args.data_dir)
    # the allocator's policy is the process's: set once, before any model or server thread starts
    tune_malloc(reuse_buffers=settings.local.enabled and settings.local.reuse_buffers)
    return replace(settings, server=server)


def _serve(args: argparse.Namespace) -> int:
    from stt_server.app import create_app
    from stt_server.http.auth import bind_refusal, log_auth_mode
    from stt_server.http.wire import serve

    settings = _settings(args)
    if args.allow_insecure_bind:
        settings = settings.with_overrides(server={"allow_unauthenticated_remote": True})
    refusal = bind_refusal(settings)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, settings.log.json)
    raise_nofile_limit()  # before the app: its stream cap is a share of the limit
    app = create_app(settings)
    log_auth_mode(settings)
    print(f"stt_server listening on http://{settings.server.host}:{settings.server.port}", file=sys.stderr)
    # aiohttp closes a connection that has not sent a whole request within keepalive_timeout of
    # opening (or of its last answer): the deadline for headers, and for idle connections.
    asyncio.run(serve(app, settings.server.host, settings.server.port, shutdown_timeout=10.0,
                      keepalive_timeout=settings.server.header_timeout_s))
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    """Print the sha256 to configure for the key on standard input (or for a new random key)."""
    if args.new:
        key = secrets.token_urlsafe(32)
        print(key)
        print(hash_key(key))
        return 0
    key = sys.stdin.readline().strip()
    if not key:
        print("error: give the key on standard input, e.g. `stt-server hash-key < key.txt`", file=sys.stderr)
        return 2
    if len(key) < 16:
        print("warning: a key this short can be guessed; `stt-server hash-key --new` makes a strong one",
              file=sys.stderr)
    print(hash_key(key))
    return 0


BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} chunks [{elapsed} spent, {remaining} left]"


def progress_bar(stream: TextIO = sys.stderr) -> tqdm:
    """A progress bar over the job's chunks with the time left (from tqdm's rate); on a terminal only."""
    return tqdm(total=0, desc="transcribing", unit="chunk", file=stream, bar_format=BAR_FORMAT,
                disable=not stream.isatty(), dynamic_ncols=True, leave=True)


async def _follow(svc: Services, job_id: str, progress: tqdm) -> None:
    events = svc.bus.subscribe(job_id)
    try:
        while True:
            event = await events.get()
            if event.name in ("chunk.planned", "chunk.completed", "job.resumed"):
                progress.total = event.data.get("chunks_total", progress.total)
                progress.update(event.data.get("chunks_done", progress.n) - progress.n)  # feeds the rate
            if event.name in ("job.completed", "job.failed", "job.cancelled"):
                return
    finally:
        svc.bus.unsubscribe(job_id, events)


async def _transcribe(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = Path(args.file)
    if not source.is_file():
        print(f"error: no such file: {source}", file=sys.stderr)
        return 2
    language = parse_language(args.language)  # a name or a code; an unknown one before any work
    async with open_services(settings) as svc:
        spooled = await svc.spool.receive_path(source, settings.server.max_upload_bytes)
        job = await accept_upload(svc, spooled, source.name,
                                  JobOptions(language=language, prompt=args.prompt, priority="high"))
        progress = progress_bar()
        follower = asyncio.create_task(_follow(svc, job.id, progress))
        job = await wait_finished(svc, job.id)
        await follower
        progress.close()
        if job.error:
            print(f"error: {job.error}", file=sys.stderr)
            return 1
        stored = await svc.store.get_transcript(job.id)
    body, _ = render(Transcript.from_dict(stored or {}), args.format)
    if args.output:
        Path(args.output).write_text(body, encoding="utf-8")
    else:
        sys.stdout.write(body)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stt-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--allow-insecure-bind", action="store_true",
                       help="listen on a non-loopback host even with no API keys configured")
    sub.add_parser("config", help="print config.toml: every setting at its default, with its comment")
    hashing = sub.add_parser("hash-key", help="print the sha256 of the API key on standard input, for [auth] keys")
    hashing.add_argument("--new", action="store_true", help="make a new random key: print it, then its sha256")
    for p in (serve, sub.add_parser("transcribe", help="transcribe one file in-process")):
        p.add_argument("--config", default=DEFAULT_CONFIG, help="TOML settings file (default: config.toml)")
        p.add_argument("--data-dir", help="where the spool, database and caches live")
    transcribe = sub.choices["transcribe"]
    transcribe.add_argument("file")
    transcribe.add_argument("--format", default="text", choices=FORMATS)
    transcribe.add_argument("-o", "--output", help="write here instead of standard output")
    transcribe.add_argument("--language")
    transcribe.add_argument("--prompt")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        return _hash_key(args)
    if args.command == "config":
        sys.stdout.write(render_config())
        return 0
    try:
        if args.command == "serve":
            return _serve(args)
        configure_logging("warning", "auto")
        return asyncio.run(_transcribe(args))
    except StartupError as err:  # bad settings, a broken install: say what, and stop before serving
        print(f"error: {err}", file=sys.stderr)
        return 2
    except STTError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
