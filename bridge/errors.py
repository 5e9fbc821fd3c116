"""The one place where failures become HTTP answers (DESIGN.md's error table).

Every error body is JSON: {"error": {"code": ..., "message": ...}} with a message a person can act on.
Retryable failures (no worker, worker busy, model loading) carry Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

RETRY_AFTER_SECONDS = 5


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    retry_after: int | None = None

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


# gRPC status of the worker -> (HTTP status, error code, retryable)
_GRPC_TABLE: dict[grpc.StatusCode, tuple[int, str, bool]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_input", False),
    grpc.StatusCode.FAILED_PRECONDITION: (422, "unprocessable_study", False),
    grpc.StatusCode.NOT_FOUND: (404, "study_not_found", False),
    grpc.StatusCode.PERMISSION_DENIED: (403, "study_path_refused", False),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, "worker_busy", True),
    grpc.StatusCode.UNAVAILABLE: (503, "worker_unavailable", True),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "deadline_exceeded", False),
    grpc.StatusCode.UNKNOWN: (500, "model_error", False),
    grpc.StatusCode.INTERNAL: (502, "bad_worker_answer", False),
    grpc.StatusCode.DATA_LOSS: (502, "data_loss", False),
    grpc.StatusCode.UNIMPLEMENTED: (502, "worker_mismatch", False),
    grpc.StatusCode.CANCELLED: (499, "cancelled", False),
}

_PREFIX = {
    "worker_unavailable": "no model worker can take the request now (retry shortly): ",
    "worker_busy": "the model worker is busy (retry shortly): ",
    "model_error": "the model failed on this study: ",
    "bad_worker_answer": "the model's answer breaks the Arterys protocol: ",
    "deadline_exceeded": "the inference did not finish in time: ",
}


def from_grpc(error: grpc.RpcError) -> ApiError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    status, name, retryable = _GRPC_TABLE.get(code, (502, "worker_error", False))
    details = (error.details() if hasattr(error, "details") else "") or code.name
    return ApiError(status, name, _PREFIX.get(name, "") + details, RETRY_AFTER_SECONDS if retryable else None)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415, "unsupported_media_type",
        f"Content-Type {content_type or '(none)'} is not supported: send multipart/related with the request JSON "
        "first and one part per DICOM file, or application/json with a studyPath",
    )


def too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def bad_worker_answer(problems: list[str]) -> ApiError:
    return ApiError(502, "bad_worker_answer", _PREFIX["bad_worker_answer"] + "; ".join(problems))


def no_worker(message: str) -> ApiError:
    return ApiError(503, "worker_unavailable", _PREFIX["worker_unavailable"] + message, RETRY_AFTER_SECONDS)
