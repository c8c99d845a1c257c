"""The embedded-engine benchmarks, folded into the suite: the server end to end beside faster-whisper
called directly on the whole file, and the server's peak memory for 10, 30 and 110 minutes of audio.

    .venv/bin/python -m benchmarks.local_engine [--repeat 3]   # = python -m benchmarks --only local,memory

See benchmarks/scenario_local.py and benchmarks/scenario_memory.py.
"""

from __future__ import annotations

import sys

from benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--only", "local,memory", *sys.argv[1:]]))
