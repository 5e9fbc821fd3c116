"""The one place where failures become HTTP answers: one stable error code per meaning, one status per code.

Every error body is JSON, {"error": {"code": ..., "message": ..., "request_id": ...}}, with a message that
says what the client did wrong or that the service failed; details (addresses, exception names, files)
stay in the logs. Retryable failures carry Retry-After. A worker's failure arrives as a gRPC status with
the worker's own error code in the trailing metadata (worker/errors.py): the same code means the same
thing here, so the worker's message is passed on as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc

RETRY_AFTER_SECONDS = 5

# code -> (HTTP status, retryable, what it means). The README's error table is this one.
ERRORS: dict[str, tuple[int, bool, str]] = {
    "bad_request": (400, False, "the request is malformed or its study is not valid input (the message says which)"),
    "unauthorized": (401, False, "no valid bearer token"),
    "study_path_refused": (403, False, "studyPath lies outside the worker's study root, or studyPath is disabled"),
    "not_found": (404, False, "no such route"),
    "study_not_found": (404, False, "studyPath names no folder of DICOM files"),
    "method_not_allowed": (405, False, "the route does not take this method"),
    "request_timeout": (408, False, "the client sent its headers or body too slowly"),
    "payload_too_large": (413, False, "the body, a part, the number of parts or an image exceeds a limit"),
    "uri_too_long": (414, False, "the request target is too long"),
    "unsupported_media_type": (415, False, "neither multipart/related nor application/json"),
    "unprocessable_study": (422, False, "the model cannot process this (valid) study"),
    "too_many_requests": (429, True, "one client address sends too many bodies at once or had too many tokens "
                                     "refused in the last minute"),
    "request_header_fields_too_large": (431, False, "too many or too large header fields"),
    "client_closed_request": (499, False, "the client went away before the answer (logged, never sent)"),
    "not_implemented": (501, False, "a Transfer-Encoding other than chunked"),
    "model_error": (500, False, "the model raised an exception (the worker keeps serving)"),
    "bridge_error": (500, False, "the bridge failed unexpectedly"),
    "worker_error": (500, False, "the worker failed unexpectedly"),
    "bad_worker_answer": (502, False, "the model's answer breaks the Arterys protocol"),
    "data_loss": (502, False, "bytes were lost between bridge and worker"),
    "worker_mismatch": (502, False, "the worker does not speak this bridge's contract"),
    "worker_unavailable": (503, True, "no worker is reachable or has its model loaded"),
    "worker_busy": (503, True, "every worker's queue is full"),
    "spool_full": (503, True, "the worker's spool, where studies are kept while they arrive, is full"),
    "deadline_exceeded": (504, False, "the inference did not finish within the deadline"),
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


# Failures of the service whose details (exception names and messages) belong in the logs, not in answers.
_LOGGED_ONLY = {
    "model_error": "the model failed on this study; the worker's log has the details",
    "worker_error": "the worker failed unexpectedly; its log has the details",
}


def from_worker(status: grpc.StatusCode, details: str, worker_code: str = "") -> ApiError:
    """The answer for a worker call that failed with `status`; `worker_code` from its trailing metadata."""
    if worker_code in _LOGGED_ONLY:
        return error(worker_code, _LOGGED_ONLY[worker_code])
    if worker_code in ERRORS:
        return error(worker_code, details or worker_code)
    code = _BY_GRPC_STATUS.get(status, "worker_error")
    return error(code, _CHANNEL_MESSAGES.get(code) or "the worker failed; see the bridge's log")
