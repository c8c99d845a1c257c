"""The embedded engine lets one encoder call at a time run across its model workers."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from stt_server.engines.base import ChunkRequest
from stt_server.engines.local import LocalEngine
from stt_server.settings import LocalEngineSettings


async def test_two_workers_never_encode_at_once() -> None:
    """The real model on two workers: every encoder call is alone, counted as it runs. The first call
    waits for a second to join it, as one would without the lock (the other worker is a few
    milliseconds behind), and gives up after a second."""
    engine = LocalEngine(LocalEngineSettings(workers=2, batch_size=1, batch_wait_ms=0))
    await engine.start()
    try:
        model = engine._model
        running, most, calls = 0, 0, 0
        count, joined = threading.Lock(), threading.Event()
        encode = model.encode

        def counted(features):  # type: ignore[no-untyped-def]
            nonlocal running, most, calls
            with count:
                running += 1
                calls += 1
                most = max(most, running)
                first = calls == 1
                if running > 1:
                    joined.set()
            if first:
                joined.wait(1.0)
            try:
                return encode(features)
            finally:
                with count:
                    running -= 1

        model.encode = counted
        rng = np.random.default_rng(0)
        requests = [ChunkRequest(samples=(rng.standard_normal(16000 * 8) * 0.01).astype(np.float32),
                                 language="en") for _ in range(6)]
        await asyncio.gather(*(engine.transcribe(r) for r in requests))
        assert engine.stats()["model_calls"]["encoder"] >= 6
        assert most == 1
    finally:
        await engine.close()
