"""How a model refuses a study: the two exceptions `infer` raises for the study's sake, not for a bug.

The worker answers them as the sender's mistake (400) or a study this model cannot process (422), with
the exception's message, and keeps serving; any other exception is the model's failure (500).
"""


class InvalidInput(Exception):
    """Raise from `infer` when the request is wrong (bad option, missing series): gRPC INVALID_ARGUMENT, HTTP 400."""


class UnsupportedStudy(Exception):
    """Raise from `infer` when the study is valid but not for this model (modality, slice count): HTTP 422."""
