"""Names the peer of every failed handshake on the worker's port, at most a few lines a minute.

gRPC says a TLS handshake failed (`ssl_transport_security.cc] Handshake failed ...`) but not with whom, and
says it once per attempt: a flood of bad handshakes wrote thousands of lines that named nobody. Its
`handshaker` trace, which the worker turns on before gRPC starts (`enable_trace`), carries both the error
and the peer's address in one line per failed handshake (`CallNextHandshakerLocked: error=... args={...
grpc.internal.endpoint_peer_address=ipv4:10.0.0.7:53412 ...}`). `HandshakeWatch` reads those lines from
the native log (service_runtime/native_log.py), logs `LINES_PER_WINDOW` failures a window with their peer, then
one line per window counting the others by address, and drops the trace's other lines and gRPC's own
peerless line.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import time

from service_runtime.native_log import NativeRecord, RateLimit

log = logging.getLogger("worker.handshake")

TRACE_FLAG = "handshaker"
_FAILED = re.compile(r"CallNextHandshakerLocked: error=(.*?)\s+shutdown=", re.DOTALL)
_PEER = re.compile(r"grpc\.internal\.endpoint_peer_address=([^,}\s]+)")
_TRACE_SOURCES = ("handshaker.cc:", "channel_trace.h:")
_PEERLESS = "Handshake failed"  # gRPC's own line of the same failure, without the peer
KEY = "failed handshake"


def uses_tls(argv: list[str]) -> bool:
    """Whether the worker's command line or environment turns TLS on (read before the flags are parsed)."""
    return any(arg == "--tls-cert" or arg.startswith("--tls-cert=") for arg in argv) or bool(
        os.environ.get("WORKER_TLS_CERT"))


def enable_trace() -> bool:
    """Adds gRPC's handshaker trace to GRPC_TRACE (read once, when grpc is first imported); True when it was
    not there yet."""
    flags = [flag for flag in os.environ.get("GRPC_TRACE", "").split(",") if flag]
    if TRACE_FLAG in flags:
        return False
    os.environ["GRPC_TRACE"] = ",".join([*flags, TRACE_FLAG])
    return True


class HandshakeWatch:
    def __init__(self, limit: RateLimit | None = None) -> None:
        self.limit = limit or RateLimit()
        self._held_peers: collections.Counter = collections.Counter()

    def __call__(self, record: NativeRecord) -> bool:
        if record.source.startswith("ssl_transport_security.cc:") and record.message.startswith(_PEERLESS):
            return True
        if record.source.startswith("trace.cc:") and record.message.startswith("gRPC Tracers"):
            return True  # "gRPC Tracers: handshaker": the trace turned on for this watch
        if not record.source.startswith(_TRACE_SOURCES):
            return False
        failed = _FAILED.search(record.message)
        if failed and not failed[1].startswith("OK"):
            peer = _PEER.search(record.message)
            self.failed(peer[1] if peer else "an unknown peer", _reason(failed[1]))
        return True

    def failed(self, peer: str, error: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.limit.allow(KEY, now):
            log.warning("a handshake from %s failed: %s", peer, error[:300])
        else:
            self._held_peers[peer.rpartition(":")[0] or peer] += 1

    def tick(self, now: float) -> None:
        for _, held in self.limit.held_back(now):
            peers = ", ".join(f"{peer} ({count})" for peer, count in self._held_peers.most_common(5))
            more = len(self._held_peers) - 5
            log.warning("%d more handshake(s) failed in the last %g s, from %s%s", held, self.limit.window, peers,
                        f" and {more} other address(es)" if more > 0 else "")
            self._held_peers.clear()


def _reason(error: str) -> str:
    """gRPC's status text without its source-location trailer and its nested OK."""
    text = " ".join(error.split("=== Source Location Trace")[0].split())
    return text.removesuffix(": OK").removesuffix(":")
