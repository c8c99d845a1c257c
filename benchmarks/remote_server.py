"""The real server on the OpenAI-compatible engine only, pointed at one upstream (the fake, in benchmarks).

Same command line as ``stt-server serve`` (``--port``, ``--data-dir``, ``--config``), so
:func:`tests.serverproc.running_server` starts it with ``module="benchmarks.remote_server"``.
The upstream comes from the environment, the rest from the config file and STT_* overrides:

    STT_BENCH_UPSTREAM_URL=http://127.0.0.1:PORT/v1 STT_BENCH_UPSTREAM_CONCURRENCY=8 \\
        STT_BENCH_UPLOAD_FORMAT=opus python -m benchmarks.remote_server serve --port 8000 --data-dir /tmp/d

No model is loaded: the server's own memory and the decode/chunk/merge path are what remain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any, Mapping

from stt_server.app import create_app
from stt_server.engines.base import Engine
from stt_server.engines.remote import OpenAIEngine, UpstreamSettings
from stt_server.http.wire import serve
from stt_server.observability.logs import configure_logging
from stt_server.observability.memory import tune_malloc
from stt_server.settings import Settings, load_settings

ENGINE = "openai"


def engine_factory(url: str, concurrency: int, upload_format: str = "opus") -> Any:
    """An ``engine_factory`` for ``create_app``: one OpenAIEngine named ``openai`` at ``url``."""

    def build(settings: Settings) -> Mapping[str, Engine]:
        upstream = UpstreamSettings(name="bench", base_url=url, model="whisper-1", concurrency=concurrency,
                                    retries=1, retry_base_s=0.05, timeout_s=300.0, upload_format=upload_format)
        return {ENGINE: OpenAIEngine([upstream], name=ENGINE)}

    return build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--config", default="config.toml")
    args = parser.parse_args(argv)
    tune_malloc()
    settings = load_settings(args.config).with_overrides(
        server={"port": args.port, "data_dir": args.data_dir}, engine={"default": ENGINE})
    configure_logging(settings.log.level, settings.log.json)
    factory = engine_factory(os.environ["STT_BENCH_UPSTREAM_URL"],
                             int(os.environ.get("STT_BENCH_UPSTREAM_CONCURRENCY", "8")),
                             os.environ.get("STT_BENCH_UPLOAD_FORMAT", "opus"))
    asyncio.run(serve(create_app(settings, factory), "127.0.0.1", args.port, shutdown_timeout=5.0,
                      keepalive_timeout=75.0))


if __name__ == "__main__":
    main()
