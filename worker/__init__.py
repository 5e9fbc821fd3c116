"""The model worker: host one model behind gRPC with health, limits and metrics.

Two jobs, two folders: worker/sdk/ is what a model author writes against, re-exported here; worker/serving/
is what serves the model (`python -m worker`, worker/__main__.py). A model author needs only what this
package exports:

    from worker import Model, Result, Mask, BoundingBox

    class MyModel(Model):
        commands = ("get-probability-mask",)
        def load(self): ...
        def infer(self, study): return Result(parts=[Mask(...)])

and runs it with `python -m worker --model my_package:MyModel --listen 0.0.0.0:50051`.
"""

from worker.sdk.legacy import LegacyHandlerModel
from worker.sdk.model import BoundingBox, ConformanceCheck, DicomOutput, LinearMeasurement, Mask, Model, Palette, Result
from worker.sdk.refusals import InvalidInput, UnsupportedStudy
from worker.sdk.study import Attachment, Instance, Series, Study

__all__ = [
    "Attachment", "BoundingBox", "ConformanceCheck", "DicomOutput", "Instance", "InvalidInput",
    "LegacyHandlerModel", "LinearMeasurement", "Mask", "Model", "Palette", "Result", "Series", "Study",
    "UnsupportedStudy",
]
