"""The real server as a subprocess, for crash tests and benchmarks: start, submit, wait, peak memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, process: subprocess.Popen[bytes], base: str) -> None:
        self.process = process
        self.base = base

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=60) as response:
            return json.loads(response.read())

    def submit(self, path: Path, **fields: str) -> dict[str, Any]:
        """POST a file to /v1/jobs as a streamed multipart body."""
        boundary = uuid.uuid4().hex
        head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                       for k, v in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n")
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head.encode()) + path.stat().st_size + len(tail)

        def body() -> Iterator[bytes]:
            yield head.encode()
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    yield block
            yield tail

        request = urllib.request.Request(self.base + "/v1/jobs", data=body(), method="POST", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(size)})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    def wait(self, job_id: str, timeout: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/v1/jobs/{job_id}")
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise TimeoutError(job_id)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.process.pid)


@contextmanager
def running_server(data_dir: Path, env: dict[str, str] | None = None, module: str = "stt_server",
                   prefix: Sequence[str] = (), port: int | None = None) -> Iterator[Server]:
    """``python -m <module> serve`` on ``port`` or a free one (``module`` may be another launcher with
    that CLI; ``prefix`` a command that execs the rest, such as ``unshare``)."""
    port = port or free_port()
    environ = {**os.environ, "STT_LOG_LEVEL": "warning", **(env or {})}
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", module, "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--config", str(ROOT / "config.toml")],
        env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                server.get("/readyz")
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError("the server exited during start-up") from None
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
