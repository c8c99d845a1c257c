"""File descriptors: as many as the process may have, a share kept for everything but event
streams, and the accept errors of a full table logged once per interval instead of in a flood."""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any, Callable

import structlog

log = structlog.get_logger(__name__)

Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]

ACCEPT_LOG_INTERVAL_S = 60.0
STREAM_SHARE = 4  # event streams may use at most a quarter of the descriptors


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one (where the system lets us); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def nofile_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def stream_cap(configured: int, nofile: int) -> int:
    """Event streams allowed at once: the setting, kept under a share of the descriptor limit so
    that the probes, uploads and the store always find a descriptor."""
    return max(1, min(configured, nofile // STREAM_SHARE))


class AcceptErrorLog:
    """An event loop's exception handler: ``socket.accept()`` failures (a full descriptor table)
    are logged at most once per interval with the number of repeats; everything else as before."""

    def __init__(self, interval_s: float = ACCEPT_LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, previous: Handler | None = None) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.previous = previous
        self.last: float | None = None
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept()"):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            self.suppressed += 1
            return
        error = context.get("exception")
        log.warning("accept_failed", error=type(error).__name__ if error else None,
                    detail=str(error) if error else None, repeats_since_last=self.suppressed,
                    hint="the process is out of file descriptors; new connections wait")
        self.last = now
        self.suppressed = 0


async def quiet_accept_errors(app: object) -> None:
    """``on_startup``: install :class:`AcceptErrorLog` on the running loop."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorLog(previous=loop.get_exception_handler()))
