"""Which protocol should the openai engine speak to its upstreams? HTTP/2 vs pooled HTTP/1.1.

Starts the fake upstream (tests/fake_upstream.py) in two child processes, one with TLS
(trustme certificate, HTTP/2 by ALPN) and one plain (HTTP/1.1 and h2c), each answering after
50 ms, and sends N uploads at concurrency C of WAV chunks of several sizes through
OpenAIEngine with http2 on and off, plus a baseline that opens a new connection per request.
Prints wall time (median of R runs) and the client's CPU time per size and protocol, and how
many uploads failed: a stalled HTTP/2 upload shows up as a timeout after ``--timeout`` seconds.

    .venv/bin/python benchmarks/upstream_protocol.py [--uploads 200] [--concurrency 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine

import httpx
import numpy as np
import structlog
import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stt_server.engines.base import ChunkRequest  # noqa: E402
from stt_server.engines.remote import OpenAIEngine  # noqa: E402
from stt_server.settings import UpstreamSettings  # noqa: E402
from stt_server.audio.media import pcm_to_wav  # noqa: E402

SIZES = {"16 KB": 16 * 1024, "512 KB": 512 * 1024, "1 MB (30 s WAV)": 960_044}
Send = Callable[[ChunkRequest], Awaitable[object]]
Result = tuple[float, int]  # wall seconds, failed uploads


def tls_files() -> tuple[str, str]:
    """A throwaway CA (PEM) and a certificate for 127.0.0.1 with its key (PEM), in a temporary directory."""
    tmp = tempfile.mkdtemp(prefix="bench-ca-")
    ca = trustme.CA()
    ca_path, cert_path = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "server.pem")
    ca.cert_pem.write_to_path(ca_path)
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert_path)
    return ca_path, cert_path


def start_server(latency: float, cert: str | None, per_audio_s: float = 0.0) -> tuple[subprocess.Popen[str], int]:
    """The fake upstream in its own process (its own core and GIL); returns it and its port.

    It answers after ``latency + per_audio_s * seconds of audio in the upload``."""
    cmd = [sys.executable, "-m", "tests.fake_upstream", "--latency", str(latency),
           "--latency-per-audio-s", str(per_audio_s)]
    cmd += ["--cert", cert] if cert else []
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def request_of(size: int) -> ChunkRequest:
    samples = (np.random.default_rng(0).standard_normal((size - 44) // 2) * 0.05).astype(np.float32)
    return ChunkRequest(samples=samples, language="en")


TIMEOUT_S = 30.0


async def run_engine(base_url: str, http2: bool, ca: str, req: ChunkRequest, uploads: int, conc: int) -> Result:
    settings = UpstreamSettings(name="bench", base_url=base_url, model="whisper", http2=http2, concurrency=conc,
                                retries=0, timeout_s=TIMEOUT_S, circuit_threshold=10**6, verify_tls=ca)
    engine = OpenAIEngine([settings])
    await engine.start()
    try:
        return await drive(engine.transcribe, req, uploads, conc)
    finally:
        await engine.close()


async def run_fresh(base_url: str, ca: str, req: ChunkRequest, uploads: int, conc: int) -> Result:
    """Baseline: HTTP/1.1 with no keep-alive, so every upload pays a TCP (and TLS) handshake."""
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=0)
    verify = ssl.create_default_context(cafile=ca)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, verify=verify, timeout=TIMEOUT_S) as client:
        async def send(r: ChunkRequest) -> object:
            wav = pcm_to_wav(r.samples)  # the engine encodes per upload too
            form = {"model": "whisper", "response_format": "verbose_json", "language": "en"}
            resp = await client.post("/audio/transcriptions", data=form, files={"file": ("c.wav", wav, "audio/wav")})
            resp.raise_for_status()
            return resp.json()

        return await drive(send, req, uploads, conc)


async def drive(send: Send, req: ChunkRequest, uploads: int, conc: int) -> Result:
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with sem:
            await send(req)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(uploads)), return_exceptions=True)
    return time.perf_counter() - t0, sum(isinstance(r, Exception) for r in results)


def measure_runs(make: Callable[[], Coroutine[Any, Any, Result]], runs: int) -> tuple[list[float], list[float], int]:
    """Wall seconds and client CPU seconds of each run, and the failed uploads over all runs."""
    walls, cpus, failed = [], [], 0
    for _ in range(runs):
        c0 = time.process_time()
        wall, bad = asyncio.run(make())
        walls.append(wall)
        cpus.append(time.process_time() - c0)
        failed += bad
    return walls, cpus, failed


def measure(make: Callable[[], Coroutine[Any, Any, Result]], runs: int) -> str:
    """``median wall (median client CPU)``, plus the failed uploads over all runs if any."""
    walls, cpus, failed = measure_runs(make, runs)
    cell = f"{statistics.median(walls):.2f} ({statistics.median(cpus):.2f})"
    return cell + (f" [{failed} failed]" if failed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: keep the table clean
    ca_path, cert_path = tls_files()
    tls_proc, tls_port = start_server(args.latency, cert_path)
    plain_proc, plain_port = start_server(args.latency, None)
    https, http = f"https://127.0.0.1:{tls_port}/v1", f"http://127.0.0.1:{plain_port}/v1"
    n, c = args.uploads, args.concurrency
    columns: dict[str, Callable[[ChunkRequest], Callable[[], Coroutine[Any, Any, Result]]]] = {
        "h2 TLS (ALPN)": lambda r: lambda: run_engine(https, True, ca_path, r, n, c),
        "h1.1 TLS pooled": lambda r: lambda: run_engine(https, False, ca_path, r, n, c),
        "h1.1 TLS new conn": lambda r: lambda: run_fresh(https, ca_path, r, n, c),
        "h2c plain": lambda r: lambda: run_engine(http, True, ca_path, r, n, c),
        "h1.1 plain pooled": lambda r: lambda: run_engine(http, False, ca_path, r, n, c),
    }
    print(f"{n} uploads at concurrency {c}, {args.latency * 1000:.0f} ms server latency, "
          f"median of {args.runs}; wall s (client CPU s)\n")
    print("| payload | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    try:
        for label, size in SIZES.items():
            req = request_of(size)
            cells = [measure(make(req), args.runs) for make in columns.values()]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    finally:
        for proc in (tls_proc, plain_proc):
            proc.communicate(timeout=10)  # closing stdin stops the server


if __name__ == "__main__":
    main()
