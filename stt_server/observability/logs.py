"""structlog set-up: JSON lines when not on a terminal, readable lines on one; secrets never logged.

Every line carries ``time``, ``level`` and ``event`` plus whatever is bound in contextvars
(``request_id``, ``job_id``). Lines from the standard library's loggers (aiohttp, asyncio) go
through the same processors, so the whole process writes one format.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, Mapping, TextIO

import structlog

from stt_server.observability.redact import Redactor, secret_values_from_env

_HANDLER_NAME = "stt_server"


def configure_logging(level: str = "info", json_mode: str = "auto", *, stream: TextIO | None = None,
                      secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> None:
    """Configure structlog and the root logger; ``secrets`` (and secret-named env values) are masked."""
    out = stream or sys.stderr
    use_json = json_mode == "true" or (json_mode == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    redact = Redactor([*secrets, *secret_values_from_env(os.environ if environ is None else environ)])
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, max(numeric, logging.WARNING), shared, [redact, renderer])


def _route_stdlib(out: TextIO, level: int, shared: list[structlog.typing.Processor],
                  final: list[structlog.typing.Processor]) -> None:
    """Send the standard library's records through structlog's processors (one handler, replaced)."""
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, *final],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
