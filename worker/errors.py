"""Every way an Infer call can fail, each with its gRPC status, its stable error code and its metric outcome.

One table, so that the servicer never picks a status inline. The error code travels to the bridge in the
trailing metadata (contract/metadata.py), where it selects the HTTP answer (bridge/errors.py): the same code
means the same thing on both sides. Messages go to the caller as they are: they say what the sender
did wrong, or that the model or worker failed, never file paths or internal names.

The model author's own exceptions (`worker.InvalidInput`, `worker.UnsupportedStudy`) live in
worker/api.py; the servicer translates them into these.
"""

from __future__ import annotations

import grpc

MAX_ECHO = 120  # characters of a sender's value quoted back in a message
# Bytes of UTF-8 a status message may have. It travels in the trailing metadata (grpc-message, percent-encoded:
# up to 3 bytes each), which gRPC caps at 8 KiB by default and beyond 16 KiB fails the call (the bridge
# would see RESOURCE_EXHAUSTED instead of the answer); this keeps every status far below that.
MAX_STATUS_BYTES = 1024
MAX_PROBLEMS = 10  # problems of a broken answer listed in its message; the rest are counted
MAX_PROBLEM_CHARACTERS = 400  # a shape problem names both layouts and the call that fixes it


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


class WorkerError(Exception):
    """Ends an Infer call with `status`; `error_code` and `outcome` are fixed per subclass."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    error_code: str = "worker_error"
    outcome: str = "worker_error"

    def __init__(self, message: str, study_data: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # The message carries text of the model's or a DICOM library's, which may quote the study's values:
        # the caller gets it whole, the log with quoted values hidden (contract.logs.StudyDataFilter).
        self.study_data = study_data


class BadRequest(WorkerError):
    """The request is wrong: stream order, limits of form, JSON, a part that is not DICOM, inconsistent pixel data,
    an unknown command, or the model rejected the input."""

    status, error_code, outcome = grpc.StatusCode.INVALID_ARGUMENT, "bad_request", "invalid_input"


class StreamEnded(BadRequest):
    """The request stream ended before its header or its end message. From a live sender that is its mistake;
    more often the sender hung up, and the stream's end arrived a moment before the cancellation."""


class TooLarge(WorkerError):
    """The study exceeds a configured limit (parts, part size, study size, declared image size)."""

    status, error_code, outcome = grpc.StatusCode.INVALID_ARGUMENT, "payload_too_large", "invalid_input"


class Unprocessable(WorkerError):
    status, error_code, outcome = grpc.StatusCode.FAILED_PRECONDITION, "unprocessable_study", "unprocessable"


class StudyNotFound(WorkerError):
    status, error_code, outcome = grpc.StatusCode.NOT_FOUND, "study_not_found", "invalid_input"


class StudyPathRefused(WorkerError):
    status, error_code, outcome = grpc.StatusCode.PERMISSION_DENIED, "study_path_refused", "invalid_input"


class Busy(WorkerError):
    """Every inference slot and queue place is taken: the sender may retry here later or elsewhere now."""

    status, error_code, outcome = grpc.StatusCode.RESOURCE_EXHAUSTED, "worker_busy", "rejected"


class NotReady(WorkerError):
    status, error_code, outcome = grpc.StatusCode.UNAVAILABLE, "worker_unavailable", "unavailable"


class Idle(WorkerError):
    """The sender stopped sending in the middle of a request stream, or sent too slowly (the same answer as the
    bridge's for an HTTP body too slow: 408)."""

    status, error_code, outcome = grpc.StatusCode.DEADLINE_EXCEEDED, "request_timeout", "idle"


class SpoolFull(WorkerError):
    """The spool (where studies arriving and waiting are kept) is full: retry later or elsewhere."""

    status, error_code, outcome = grpc.StatusCode.RESOURCE_EXHAUSTED, "spool_full", "rejected"


class DataLoss(WorkerError):
    status, error_code, outcome = grpc.StatusCode.DATA_LOSS, "data_loss", "data_loss"


class DeadlineExceeded(WorkerError):
    status, error_code, outcome = grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded", "deadline_exceeded"


class Cancelled(WorkerError):
    status, error_code, outcome = grpc.StatusCode.CANCELLED, "client_closed_request", "cancelled"


class ModelFailed(WorkerError):
    """The model raised: its message goes to the caller, its traceback to the worker's log."""

    status, error_code, outcome = grpc.StatusCode.UNKNOWN, "model_error", "model_error"


class InvalidResult(WorkerError):
    """The model's answer breaks the protocol: `problems` lists every violation; never sent as OK."""

    status, error_code, outcome = grpc.StatusCode.INTERNAL, "bad_worker_answer", "invalid_result"

    def __init__(self, problems) -> None:
        self.problems = list(problems)
        listed = "; ".join(str(problem)[:MAX_PROBLEM_CHARACTERS] for problem in self.problems[:MAX_PROBLEMS])
        more = len(self.problems) - MAX_PROBLEMS
        super().__init__("the model's result breaks the Arterys protocol: " + listed
                         + (f"; and {more} more problem(s)" if more > 0 else ""))



def _subclasses(cls: type) -> list[type]:
    return [cls, *(descendant for sub in cls.__subclasses__() for descendant in _subclasses(sub))]


# Every `outcome` label of worker_inferences_total: success, the caller gone (cancelled, past its deadline),
# and each failure above. The metrics exist at 0 for all of them from start-up (worker/metrics.py).
OUTCOMES = tuple(dict.fromkeys(("ok", "cancelled", "deadline_exceeded",
                                *(error.outcome for error in _subclasses(WorkerError)))))
