"""The allocator policy of the model process: with reuse_buffers, a large buffer freed by one model
call is handed to the next as it is (no page faults); without it, it goes back to the system."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A child process (the policy is process-wide): 64 MB allocated and written, freed, then allocated
# and written again, as the encoder does with its attention scores, layer after layer; it prints
# the page faults of the second round.
_ROUND_TRIP = """
import ctypes, json, resource, sys
from stt_server.observability.memory import release_free_memory, tune_malloc
applied = tune_malloc(reuse_buffers=sys.argv[1] == "reuse")
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20

def round_trip():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)

round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults, "trimmed": release_free_memory()}))
"""


def round_trip(mode: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", _ROUND_TRIP, mode], capture_output=True, text=True, check=True)
    result: dict[str, int] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_reused_buffers_are_not_faulted_in_again_and_handed_back_ones_are() -> None:
    pages = (64 << 20) // 4096
    reused, handed_back = round_trip("reuse"), round_trip("default")
    assert reused["applied"] and handed_back["applied"]
    assert reused["faults"] < pages // 100, reused  # the freed 64 MB came back as it was
    assert handed_back["faults"] > pages // 2, handed_back  # mapped afresh: every page faulted in again
    assert reused["trimmed"]  # what it holds free can still be handed back on purpose (after the model load)
