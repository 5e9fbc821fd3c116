"""Example models: `mock_model` (every output type, chosen by inference_command) and fault models.

`python -m worker --model mock_model` hosts MockModel; the fault models used by the tests are
`mock_model.faults:SlowLoadingModel`, `:SlowModel` and `:FailingModel`; `mock_model.legacy` is the same
bounding boxes and 3D mask written as Arterys-style handlers.
"""

from mock_model.model import MockModel

__all__ = ["MockModel"]
