"""The ``stt-server`` command: ``serve`` the HTTP API, or ``transcribe`` a file in-process."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from .apikeys import hash_key
from .errors import STTError
from .formats import FORMATS, render
from .intake import JobOptions, accept_upload, wait_finished
from .languages import parse_language
from .logs import configure_logging
from .memory import tune_malloc
from .services import Services, open_services
from .settings import Settings, load_settings
from .transcript import Transcript

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
    return replace(settings, server=server)


def _serve(args: argparse.Namespace) -> int:
    from .app import create_app
    from .auth import bind_refusal, log_auth_mode

    try:
        settings = _settings(args)
    except ValueError as err:
        print(f"error: bad settings: {err}", file=sys.stderr)
        return 2
    if args.allow_insecure_bind:
        settings = settings.with_overrides(server={"allow_unauthenticated_remote": True})
    refusal = bind_refusal(settings)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, settings.log.json)
    log_auth_mode(settings)
    app = create_app(settings)
    print(f"stt_server listening on http://{settings.server.host}:{settings.server.port}", file=sys.stderr)
    web.run_app(app, host=settings.server.host, port=settings.server.port, print=None,
                shutdown_timeout=10.0)
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


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream=sys.stderr) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.tty = stream.isatty()

    def update(self, done: int, total: int) -> None:
        if not self.tty or total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} chunks")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


async def _follow(svc: Services, job_id: str, progress: _Progress) -> None:
    events = svc.bus.subscribe(job_id)
    try:
        while True:
            event = await events.get()
            if event.name == "chunk.completed":
                progress.update(event.data["chunks_done"], event.data["chunks_total"])
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
        progress = _Progress()
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
    tune_malloc()
    if args.command == "serve":
        return _serve(args)
    configure_logging("warning", "auto")
    try:
        return asyncio.run(_transcribe(args))
    except STTError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
