"""Canaries: the grpc.aio bugs service_runtime/grpc_aio.py works around, still there in the pinned grpcio.

Each bug is reproduced with plain grpc.aio on loopback (tests/grpc_aio_bugs.py, in a process of its own)
and must still show: the day a grpcio upgrade fixes it, its canary fails, saying which workaround can go.
The same scenario through the workaround must not show the bug, so the workaround is known to work until
then.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.services import ROOT


def scenario(name: str, way: str) -> dict:
    run = subprocess.run([sys.executable, "-m", "tests.grpc_aio_bugs", name, way], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_grpc_aio_still_replaces_a_servers_status_when_a_write_fails_after_it():
    """grpc/grpc#36066 (fix proposed in grpc/grpc#43486): a server that refuses a stream while the client
    still writes is reported as INTERNAL "Internal error from Core" (49 calls in 50 here, grpcio 1.85.1)."""
    codes = scenario("lost-status", "plain")["codes"]
    assert codes.get("INTERNAL", 0) > 0, (
        f"grpc.aio reported the server's status for every call ({codes}): grpc/grpc#36066 is fixed in this "
        "grpcio. Remove the first-status keeping of service_runtime.grpc_aio.StreamCall (code, details, "
        "trailing_metadata, _ended) and its entry in docs/decisions.md.")
    assert scenario("lost-status", "workaround")["codes"] == {"INVALID_ARGUMENT": 50}


def test_grpc_aio_still_leaks_what_an_abandoned_read_holds():
    """grpc/grpc#43360: cancelling the task that awaits a read leaks the read's batch and the message it was
    receiving (about 114 KB a call here, with 64 KiB messages; grpcio 1.85.1)."""
    plain = scenario("read-leak", "plain")
    assert plain["bytes_kept_per_call"] > plain["message_bytes"] / 4, (
        f"an abandoned read kept {plain['bytes_kept_per_call']:.0f} bytes a call: grpc/grpc#43360 is fixed in this "
        "grpcio. Remove the shielded read of service_runtime.grpc_aio.StreamCall.read and its entry in "
        "docs/decisions.md.")
    shielded = scenario("read-leak", "workaround")
    # The same line as above: through the adapter 0.3-8 KB a call (8 KB on a loaded machine, where a few calls
    # are still ending when the heap is read), against about 114 KB without it.
    assert shielded["bytes_kept_per_call"] < shielded["message_bytes"] / 4, shielded
