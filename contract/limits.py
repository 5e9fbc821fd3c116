"""The sizes and limits bridge and worker must agree on, each defined once.

- A study's form: the bridge refuses an HTTP request over these (413) before it reaches a worker, and the
  worker enforces the same again for whoever calls it directly; both flags default to these values.
- The minimum upload rate: the bridge's for HTTP bodies (`--min-upload-rate` over `--body-timeout`) is the
  worker's for request streams (`--min-receive-rate` over `--receive-window-seconds`), less one chunk:
  a direct caller cannot do what the bridge forbids (worker/serving/rate.py).
- The gRPC stream: study and answer bytes cross in chunk messages of about `CHUNK_BYTES`; a message may
  have at most `MESSAGE_BYTES`; both ends use large windows and frames (`stream_options`); the bridge pings
  every `PING_EVERY_MS` to notice a hung worker, and the worker accepts pings that often.
"""

from __future__ import annotations

MAX_STUDY_BYTES = 4 << 30  # a request's body (bridge) and a study's parts (worker)
MAX_PARTS = 20_000
MAX_PART_BYTES = 1 << 30
MAX_JSON_BYTES = 1 << 20  # the request's JSON part
MAX_COMMAND_LENGTH = 256  # characters of inference_command

MIN_UPLOAD_RATE = 64 << 10  # bytes per second, over each window of waiting
RATE_WINDOW_SECONDS = 20.0

# What a sender puts in one chunk message at most (the bridge coalesces a body's pieces up to it, the worker
# cuts answers into it): about 1 MiB keeps gRPC's per-message cost low (BENCHMARKS.md). A receiver allows for
# this much lag.
CHUNK_BYTES = 1 << 20
MESSAGE_BYTES = 16 << 20  # the largest gRPC message either end sends or receives: a chunk, a result header
# The most messages one bundle may hold: each is read into a Python object of a few hundred bytes however short
# it is on the wire (a 16 MiB bundle of empty chunks held over 1 GB and kept a worker's loop busy for 10 s).
# Senders start a new bundle past it; a receiver refuses a bundle that holds more. A small study sent whole
# (at most 1 MiB and --max-parts 20,000 by default) holds at most 40,002.
BUNDLE_MESSAGES = 65_536
# What one message read out of a bundle costs in memory besides its bytes (a view or a generated message,
# measured: 300-560 bytes), for the worker's count of what a parked call holds.
MESSAGE_OBJECT_BYTES = 512
PING_EVERY_MS = 5_000  # the bridge's keepalive pings; the worker accepts them down to a second less


def stream_options(max_message_bytes: int = MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC options both ends set: the message limits (a peer's own do not lift this end's 4 MiB default),
    and a large initial window with large frames, so that a study streams without waiting for window
    updates (measured: half the CPU per byte of gRPC's defaults; BENCHMARKS.md)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.http2.lookahead_bytes", 8 << 20),
        ("grpc.http2.max_frame_size", (1 << 24) - 1),
    ]
