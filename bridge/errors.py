"""The one place where failures become HTTP answers: one stable error code per meaning, one status per code.

Whatever ends a request early reaches `for_failure`, once, in the app: an answer decided on the spot (an
ApiError), a malformed or too large body, a body too slow or a client gone, a worker call that ended
without an answer (WorkerFailed), an answer that breaks the protocol, or a bug of the bridge (500).

Every error body is JSON, {"error": {"code": ..., "message": ..., "request_id": ...}}, with a message that
says what the client did wrong or that the service failed; details (addresses, exception names, files)
stay in the logs. Retryable failures carry Retry-After. A worker's failure arrives as a gRPC status with
the worker's own error code in the trailing metadata: both services take their codes from one table
(contract/errors.py), so the worker's message is passed on as it is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import grpc

from arterys_http.multipart import LimitExceeded, MultipartError
from bridge.http import BodyCutShort, BodyTimeout, ClientGone
from bridge.translate import BadWorkerAnswer, InvalidRequest
from contract import errors as contract_errors

log = logging.getLogger("bridge.http")

RETRY_AFTER_SECONDS = 5

# code -> (HTTP status, retryable, what it means): the contract's table (contract/errors.py), which the
# worker's error codes come from too. The README's and docs/protocol.md's error tables are this one.
ERRORS: dict[str, tuple[int, bool, str]] = {
    kind.code: (kind.http_status, kind.retryable, kind.meaning) for kind in contract_errors.TABLE
}

# gRPC status -> code, for failures that carry no error code of the worker's (the channel's own errors).
_BY_GRPC_STATUS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "bad_request",
    grpc.StatusCode.FAILED_PRECONDITION: "unprocessable_study",
    grpc.StatusCode.NOT_FOUND: "study_not_found",
    grpc.StatusCode.PERMISSION_DENIED: "study_path_refused",
    # Without the worker's code this is the channel's own: an answer over a gRPC limit (its status message or
    # metadata too large). An answer the bridge cannot read is the worker's failure, never "busy".
    grpc.StatusCode.RESOURCE_EXHAUSTED: "bad_worker_answer",
    grpc.StatusCode.UNAVAILABLE: "worker_unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.UNKNOWN: "model_error",
    grpc.StatusCode.INTERNAL: "bad_worker_answer",
    grpc.StatusCode.DATA_LOSS: "data_loss",
    grpc.StatusCode.UNIMPLEMENTED: "worker_mismatch",
    grpc.StatusCode.CANCELLED: "client_closed_request",
}


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    retry_after: int | None = None

    def body(self, request_id: str = "") -> dict:
        error = {"code": self.code, "message": self.message}
        if request_id:
            error["request_id"] = request_id
        return {"error": error}

    def json_bytes(self, request_id: str = "") -> bytes:
        return json.dumps(self.body(request_id)).encode()

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def response_codes() -> list[str]:
    """Every HTTP status an inference route can end with (as metric label values), 200 first."""
    return ["200", *sorted({str(status) for status, _, _ in ERRORS.values()})]


def error(code: str, message: str) -> ApiError:
    status, retryable, _ = ERRORS[code]
    return ApiError(status, code, message, RETRY_AFTER_SECONDS if retryable else None)


class MethodNotAllowed(ApiError):
    """405, with the Allow header RFC 9110 requires."""

    def __init__(self, path: str, methods: tuple[str, ...]) -> None:
        status, _, _ = ERRORS["method_not_allowed"]
        super().__init__(status, "method_not_allowed", f"{path[:200]} takes {' or '.join(methods)}")
        self.allowed = methods

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Allow": ", ".join(self.allowed)}


def bad_request(message: str) -> ApiError:
    return error("bad_request", message)


def too_large(message: str) -> ApiError:
    return error("payload_too_large", message)


def unsupported_media_type(content_type: str) -> ApiError:
    shown = (content_type[:80] + "...") if len(content_type) > 80 else content_type
    return error("unsupported_media_type",
                 f"Content-Type {shown or '(none)'} is not supported: send multipart/related with the request JSON "
                 "first and one part per DICOM file, or application/json with a studyPath")


def bad_worker_answer(problems: list[str]) -> ApiError:
    return error("bad_worker_answer", "the worker's answer breaks the Arterys protocol: " + "; ".join(problems))


def no_worker(message: str) -> ApiError:
    return error("worker_unavailable", f"no model worker can take the request now (retry shortly): {message}")


def worker_busy(message: str) -> ApiError:
    return error("worker_busy", message)


# Messages of the channel itself (no worker code) name addresses and gRPC internals: say what it means instead.
_CHANNEL_MESSAGES = {
    "worker_unavailable": "no model worker can take the request now (retry shortly)",
    "deadline_exceeded": "the inference did not finish within the bridge's deadline (--deadline-seconds, "
                         "BRIDGE_DEADLINE_SECONDS)",
    "worker_mismatch": "the worker does not offer this bridge's Inference service",
    "client_closed_request": "the call was cancelled",
    "bad_worker_answer": "the worker's answer could not be read; the bridge's log has the details",
}


class WorkerFailed(Exception):
    """A worker call that ended without an answer, refused before its admission or ended after it: its gRPC
    `status` and `details`, the worker's `error_code` and the `input_hash` it reported (either may be empty),
    the `worker` that had admitted it (its host name; empty before admission), and, refused before
    admission, what was `tried` (for the log)."""

    def __init__(self, status: grpc.StatusCode, details: str, error_code: str = "", input_hash: str = "",
                 worker: str = "", tried: str = "") -> None:
        super().__init__(f"{status.name} {details}")
        self.status, self.details, self.error_code = status, details, error_code
        self.input_hash, self.worker, self.tried = input_hash, worker, tried


# A worker's failures whose message may quote the model's words about the study (its exception, its answer).
MODEL_WORDS = ("model_error", "bad_worker_answer")


def may_quote_the_study(worker_code: str) -> bool:
    """Whether a worker's message with this code may quote the client's study: the client's failures (a 4xx,
    a model's refusal among them) and the model's. The others say how the worker is (busy, its spool full)."""
    return worker_code in ERRORS and (ERRORS[worker_code][0] < 500 or worker_code in MODEL_WORDS)


def for_failure(failure: BaseException) -> ApiError:
    """The answer for whatever ended a request early; `bridge_error` for a failure nobody expected (a bug),
    which is logged here with its traceback."""
    if isinstance(failure, ApiError):
        return failure
    if isinstance(failure, WorkerFailed):
        return from_worker(failure.status, failure.details, failure.error_code)
    if isinstance(failure, LimitExceeded):
        return too_large(str(failure))
    if isinstance(failure, MultipartError):
        return bad_request(f"malformed multipart body: {failure}")
    if isinstance(failure, InvalidRequest):
        return bad_request(str(failure))
    if isinstance(failure, BadWorkerAnswer):
        return bad_worker_answer(failure.problems)
    if isinstance(failure, BodyTimeout):
        return error("request_timeout", str(failure))
    if isinstance(failure, BodyCutShort):
        return bad_request(str(failure))
    if isinstance(failure, ClientGone):
        return error("client_closed_request", "the client closed the connection")
    log.error("unexpected error in the bridge", exc_info=failure)
    return error("bridge_error", "the bridge failed unexpectedly; see its log")


def from_worker(status: grpc.StatusCode, details: str, worker_code: str = "") -> ApiError:
    """The answer for a worker call that failed with `status`; `worker_code` from its trailing metadata."""
    kind = contract_errors.BY_CODE.get(worker_code)
    if kind is not None:  # the worker's own code: its message, unless its details belong in its log only
        return error(worker_code, kind.public_message or details or worker_code)
    code = _BY_GRPC_STATUS.get(status, "worker_error")
    return error(code, _CHANNEL_MESSAGES.get(code) or "the worker failed; see the bridge's log")
