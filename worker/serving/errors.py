"""Every way an Infer call can fail, each with its stable error code and its metric outcome.

The codes, and the gRPC status each ends a call with, are the contract's table (contract/errors.py): a
class here names its code, and its status follows from it, so that the servicer never picks a status inline
and the bridge reads the same code the same way. The code travels to the bridge in the trailing metadata
(contract/metadata.py). Messages go to the caller as they are: they say what the sender did wrong, or that
the model or worker failed, never file paths or internal names.

The model author's own exceptions (`worker.InvalidInput`, `worker.UnsupportedStudy`) live in
worker/sdk/model.py; the servicer translates them into these.
"""

from __future__ import annotations

import grpc

from contract.errors import grpc_status

MAX_PROBLEMS = 10  # problems of a broken answer listed in its message; the rest are counted
MAX_PROBLEM_CHARACTERS = 400  # a shape problem names both layouts and the call that fixes it


class WorkerError(Exception):
    """Ends an Infer call with `status`, the contract's status for `error_code`; `error_code` and `outcome` are
    fixed per subclass."""

    error_code: str = "worker_error"
    outcome: str = "worker_error"
    status: grpc.StatusCode = grpc_status("worker_error")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.status = grpc_status(cls.error_code)

    def __init__(self, message: str, study_data: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # The message carries text of the model's or a DICOM library's, which may quote the study's values:
        # the caller gets it whole, the log with quoted values hidden (service_runtime.logs.StudyDataFilter).
        self.study_data = study_data


class BadRequest(WorkerError):
    """The request is wrong: stream order, limits of form, JSON, a part that is not DICOM, inconsistent pixel data,
    an unknown command, or the model rejected the input."""

    error_code, outcome = "bad_request", "invalid_input"


class StreamEnded(BadRequest):
    """The request stream ended before its header or its end message. From a live sender that is its mistake;
    more often the sender hung up, and the stream's end arrived a moment before the cancellation."""


class TooLarge(WorkerError):
    """The study exceeds a configured limit (parts, part size, study size, declared image size)."""

    error_code, outcome = "payload_too_large", "invalid_input"


class Unprocessable(WorkerError):
    error_code, outcome = "unprocessable_study", "unprocessable"


class StudyNotFound(WorkerError):
    error_code, outcome = "study_not_found", "invalid_input"


class StudyPathRefused(WorkerError):
    error_code, outcome = "study_path_refused", "invalid_input"


class Busy(WorkerError):
    """Every inference slot and queue place is taken: the sender may retry here later or elsewhere now."""

    error_code, outcome = "worker_busy", "rejected"


class NotReady(WorkerError):
    error_code, outcome = "worker_unavailable", "unavailable"


class Idle(WorkerError):
    """The sender stopped sending in the middle of a request stream, or sent too slowly (the same answer as the
    bridge's for an HTTP body too slow: 408)."""

    error_code, outcome = "request_timeout", "idle"


class SpoolFull(WorkerError):
    """The spool (where studies arriving and waiting are kept) is full: retry later or elsewhere."""

    error_code, outcome = "spool_full", "rejected"


class DataLoss(WorkerError):
    error_code, outcome = "data_loss", "data_loss"


class DeadlineExceeded(WorkerError):
    error_code, outcome = "deadline_exceeded", "deadline_exceeded"


class Cancelled(WorkerError):
    error_code, outcome = "client_closed_request", "cancelled"


class ModelFailed(WorkerError):
    """The model raised: its message goes to the caller, its traceback to the worker's log."""

    error_code, outcome = "model_error", "model_error"


class InvalidResult(WorkerError):
    """The model's answer breaks the protocol: `problems` lists every violation; never sent as OK."""

    error_code, outcome = "bad_worker_answer", "invalid_result"

    def __init__(self, problems) -> None:
        self.problems = list(problems)
        listed = "; ".join(str(problem)[:MAX_PROBLEM_CHARACTERS] for problem in self.problems[:MAX_PROBLEMS])
        more = len(self.problems) - MAX_PROBLEMS
        super().__init__("the model's result breaks the Arterys protocol: " + listed
                         + (f"; and {more} more problem(s)" if more > 0 else ""))



def _subclasses(cls: type) -> list[type]:
    return [cls, *(descendant for sub in cls.__subclasses__() for descendant in _subclasses(sub))]


# Every `outcome` label of worker_inferences_total: success, the caller gone (cancelled, past its deadline),
# and each failure above. The metrics exist at 0 for all of them from start-up (worker/serving/metrics.py).
OUTCOMES = tuple(dict.fromkeys(("ok", "cancelled", "deadline_exceeded",
                                *(error.outcome for error in _subclasses(WorkerError)))))
