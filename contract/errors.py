"""Every way a request can fail, as both services name it: one row per stable error code.

A row says what the code means, the HTTP status the bridge answers with (docs/protocol.md, "Errors"),
whether a client may retry (Retry-After), and, for the failures a worker reports, the gRPC status it ends
its call with; the code itself travels beside that status in the trailing metadata (contract/metadata.py),
so the same code means the same thing on both sides. worker/serving/errors.py and bridge/errors.py are derived
from this table, and tests/test_contract.py fails when either, or the documentation's table, drifts from it.

Messages: a worker's message goes to the client as it is (it says what the sender did wrong), except for
the rows with a `public_message`, whose details (exception names, a model's own text) stay in the worker's
log. A message crosses gRPC in the trailing metadata, so it is bounded (`status_message`), and a value of
the sender's quoted in it is cut short (`short`).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

Status = grpc.StatusCode


@dataclass(frozen=True)
class ErrorKind:
    code: str
    http_status: int
    retryable: bool
    meaning: str
    grpc_status: grpc.StatusCode | None = None  # None: the bridge's own answer, never a worker's
    public_message: str = ""  # said instead of the worker's message, whose details stay in its log


TABLE: tuple[ErrorKind, ...] = (
    ErrorKind("bad_request", 400, False, "the request is malformed or its study is not valid input (the message "
              "says which)", Status.INVALID_ARGUMENT),
    ErrorKind("unauthorized", 401, False, "no valid bearer token"),
    ErrorKind("study_path_refused", 403, False, "studyPath lies outside the worker's study root, or studyPath is "
              "disabled", Status.PERMISSION_DENIED),
    ErrorKind("not_found", 404, False, "no such route"),
    ErrorKind("study_not_found", 404, False, "studyPath names no folder of DICOM files", Status.NOT_FOUND),
    ErrorKind("method_not_allowed", 405, False, "the route does not take this method"),
    ErrorKind("request_timeout", 408, False, "the client sent its headers or body too slowly",
              Status.DEADLINE_EXCEEDED),
    ErrorKind("payload_too_large", 413, False, "the body, a part, the number of parts or an image exceeds a limit",
              Status.INVALID_ARGUMENT),
    ErrorKind("uri_too_long", 414, False, "the request target is too long"),
    ErrorKind("unsupported_media_type", 415, False, "neither multipart/related nor application/json"),
    ErrorKind("unprocessable_study", 422, False, "the model cannot process this (valid) study",
              Status.FAILED_PRECONDITION),
    ErrorKind("too_many_requests", 429, True, "one client address sends too many bodies at once or had too many "
              "tokens refused in the last minute"),
    ErrorKind("request_header_fields_too_large", 431, False, "too many or too large header fields"),
    ErrorKind("client_closed_request", 499, False, "the client went away before the answer (logged, never sent)",
              Status.CANCELLED),
    ErrorKind("not_implemented", 501, False, "a Transfer-Encoding other than chunked"),
    ErrorKind("model_error", 500, False, "the model raised an exception (the worker keeps serving)", Status.UNKNOWN,
              public_message="the model failed on this study; the worker's log has the details"),
    ErrorKind("bridge_error", 500, False, "the bridge failed unexpectedly"),
    ErrorKind("worker_error", 500, False, "the worker failed unexpectedly", Status.INTERNAL,
              public_message="the worker failed unexpectedly; its log has the details"),
    ErrorKind("bad_worker_answer", 502, False, "the model's answer breaks the Arterys protocol", Status.INTERNAL),
    ErrorKind("data_loss", 502, False, "bytes were lost between bridge and worker", Status.DATA_LOSS),
    ErrorKind("worker_mismatch", 502, False, "the worker does not speak this bridge's contract"),
    ErrorKind("worker_unavailable", 503, True, "no worker is reachable or has its model loaded", Status.UNAVAILABLE),
    ErrorKind("worker_busy", 503, True, "every worker's queue is full", Status.RESOURCE_EXHAUSTED),
    ErrorKind("spool_full", 503, True, "the worker's spool, where studies are kept while they arrive, is full",
              Status.RESOURCE_EXHAUSTED),
    ErrorKind("deadline_exceeded", 504, False, "the inference did not finish within the deadline",
              Status.DEADLINE_EXCEEDED),
)
BY_CODE: dict[str, ErrorKind] = {kind.code: kind for kind in TABLE}
# Refusals of a worker that is full: a bridge tries another worker, or waits for a place, before answering.
FULL = ("worker_busy", "spool_full")


def grpc_status(code: str) -> grpc.StatusCode:
    """The status a worker ends its call with for `code`; KeyError for a code workers never send."""
    status = BY_CODE[code].grpc_status
    if status is None:
        raise KeyError(f"{code} is the bridge's own answer; a worker never ends a call with it")
    return status


# ------------------------------------------------------------------------------------------- messages

MAX_ECHO = 120  # characters of a sender's value quoted back in a message
# Bytes of UTF-8 a worker's message may have. It travels in the trailing metadata (grpc-message,
# percent-encoded: up to 3 bytes each), which gRPC caps at 8 KiB by default and beyond 16 KiB fails the call
# (the bridge would see RESOURCE_EXHAUSTED instead of the answer); this keeps every status far below that.
MAX_STATUS_BYTES = 1024


def short(value) -> str:
    """A sender's value fit to quote in a message: bounded, printable, no line breaks. Only a prefix is
    looked at, so a value of a megabyte costs no more than one of a hundred characters."""
    text = value if isinstance(value, str) else str(value)[: MAX_ECHO * 4]
    shown = "".join(c if c.isprintable() else "?" for c in text[:MAX_ECHO])
    return shown if len(text) <= MAX_ECHO else shown + f"... ({len(text):,} characters)"


def status_message(message: str) -> str:
    """`message` cut to MAX_STATUS_BYTES of UTF-8, marked as cut."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= MAX_STATUS_BYTES:
        return message
    return encoded[: MAX_STATUS_BYTES - 40].decode("utf-8", "ignore") + f"... ({len(encoded):,} bytes, cut)"
