"""Models that misbehave on purpose, for the fault tests. Timings come from the environment so that a
test can start them as real worker processes."""

from __future__ import annotations

import os
import time

from mock_model.model import MockModel
from worker import Result, Study


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class SlowLoadingModel(MockModel):
    """Takes MOCK_LOAD_SECONDS (default 3) to load: health must say NOT_SERVING until then."""

    name = "slow_loading_model"

    def load(self) -> None:
        time.sleep(_seconds("MOCK_LOAD_SECONDS", 3))


class SlowModel(MockModel):
    """Takes MOCK_INFER_SECONDS (default 3) per inference, stopping early when the caller is gone."""

    name = "slow_model"

    def __init__(self) -> None:
        self.completed = 0  # inferences that ran to the end (tests read it in-process)
        self.stopped_early = 0

    def infer(self, study: Study) -> Result:
        deadline = time.monotonic() + _seconds("MOCK_INFER_SECONDS", 3)
        while time.monotonic() < deadline:
            if study.is_cancelled():
                self.stopped_early += 1
                return Result()
            time.sleep(0.02)
        self.completed += 1
        return super().infer(study)


class FailingModel(MockModel):
    """Raises on every inference: the worker must answer UNKNOWN and keep serving."""

    name = "failing_model"

    def infer(self, study: Study) -> Result:
        raise RuntimeError("mock failure: the model crashed on purpose")


class StubbornModel(MockModel):
    """Takes MOCK_INFER_SECONDS (default 3) and never checks study.is_cancelled(): it overruns its caller."""

    name = "stubborn_model"

    def infer(self, study: Study) -> Result:
        time.sleep(_seconds("MOCK_INFER_SECONDS", 3))
        return super().infer(study)
