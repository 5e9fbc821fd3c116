"""What a model author writes against: `Model` and the typed results it returns (the `Study` it receives is in
worker/sdk/study.py, the exceptions it raises to refuse one in worker/sdk/refusals.py).

A model is loaded once (`load`) and then called once per request (`infer`) with a `Study`; it returns a
`Result`. Everything else (the Arterys protocol, streaming, limits, health, metrics) is the worker's job.
Results are checked against the protocol before anything is sent, so a broken answer becomes a clear
error in the worker's log and a 502 at the bridge, never a malformed 200 for the viewer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - import for type hints only
    import pydicom

    from worker.sdk.study import Study


class Model:
    """Base class of a hosted model. Subclass it, set the class attributes, implement `infer`.

    Attributes:
        name: shown in metrics and Describe; the class name when empty.
        version: free text shown by Describe.
        commands: the `inference_command` values this model accepts; a request naming another one is
            refused with INVALID_ARGUMENT listing these. Empty means any command is passed through.
        default_command: the command used when a request names none (the worker's --default-command
            overrides it).
        study_in_memory: keep the whole study in memory instead of writing what exceeds the worker's
            --spool-memory-mib to disk; right for a model that reads every instance anyway.
        max_batch_size, max_batch_delay: read only when the model defines `infer_batch` (below).

    Batching (opt-in): a model that defines `infer_batch(self, studies: list[Study]) -> list[Result]` is
    called with several studies at once instead of `infer`. The worker gathers studies that have fully
    arrived and wait for the model, up to `max_batch_size` of them or until the first has waited
    `max_batch_delay` seconds, whichever comes first (worker/serving/batching.py). The list it returns holds one
    answer per study, in the order given; a study that fails gets an exception instance in its place
    (`InvalidInput(...)`, `UnsupportedStudy(...)`, any other exception), which fails that study alone, as
    if `infer` had raised it.
    """

    name: str = ""
    version: str = ""
    commands: Sequence[str] = ()
    default_command: str = ""
    study_in_memory: bool = False
    max_batch_size: int = 8
    max_batch_delay: float = 0.005  # seconds

    def load(self) -> None:
        """Loads weights once. The worker reports NOT_SERVING until this returns."""

    def infer(self, study: Study) -> Result:
        """Runs the model on one study and returns its findings."""
        raise NotImplementedError

    def describe_name(self) -> str:
        return self.name or type(self).__name__


# ------------------------------------------------------------------------------------------- results


@dataclass
class ConformanceCheck:
    """One line of `dicomConformance.recommended`: an input check shown to the user as a warning."""

    description: str
    compliant: bool


@dataclass
class Palette:
    """A heatmap palette: anchor points (threshold 0..1, (r, g, b, a)) from 0.0 to 1.0."""

    points: Sequence[tuple[float, Sequence[int]]]

    def to_json(self) -> dict:
        return {
            "type": "anchorpoints",
            "data": [{"threshold": float(t), "color": [int(c) for c in color]} for t, color in self.points],
        }


@dataclass
class BoundingBox:
    """A box in pixel space on one image: top_left and bottom_right are (column, row)."""

    label: str
    sop_instance_uid: str
    top_left: Sequence[float]
    bottom_right: Sequence[float]
    frame_number: int | None = None  # 1-based, for multi-frame instances
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "label": self.label,
            "SOPInstanceUID": self.sop_instance_uid,
            "top_left": list(self.top_left),
            "bottom_right": list(self.bottom_right),
        }
        if self.frame_number is not None:
            out["frame_number"] = self.frame_number
        return {**out, **self.extra}


@dataclass
class LinearMeasurement:
    """A line on one image, start and end in pixel (column, row) or world (x, y) coordinates."""

    label: str
    sop_instance_uid: str
    start: Sequence[float]
    end: Sequence[float]
    coordinates_type: str = "pixel"
    frame_number: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict = {"label": self.label, "SOPInstanceUID": self.sop_instance_uid}
        if self.frame_number is not None:
            out["frame_number"] = self.frame_number
        out.update(coordinates_type=self.coordinates_type, start=list(self.start), end=list(self.end))
        return {**out, **self.extra}


@dataclass
class Mask:
    """A mask part. The numpy array's shape decides the protocol shape, so width and height cannot be
    swapped by hand:

    - 3D, for one series: `array` of shape (depth, height, width) or (timepoints, depth, height, width),
      with `series_instance_uid`; slices in the series' order (`Series.instances`, by position).
    - 2D, for one image: `array` of shape (height, width), with `sop_instance_uid` (and `frame_number`).

    dtype must be uint8 (bool is accepted for boolean masks); any memory layout (transposed, sliced) is
    written in the protocol's byte order.
    """

    label: str
    array: np.ndarray
    binary_type: str = "probability_mask"
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    frame_number: int | None = None
    probability_threshold: float | None = None
    palette: str | None = None  # heatmaps: a key of Result.palettes
    label_map: Mapping[int | str, str] | None = None  # numeric label masks: value -> name
    conformance: Sequence[ConformanceCheck] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class DicomOutput:
    """A DICOM object returned to the viewer (secondary capture, structured report, GSPS).

    `data` is a complete DICOM Part 10 file as bytes, or a pydicom Dataset that the worker writes.
    """

    label: str
    data: bytes | pydicom.Dataset
    binary_type: str = "dicom_secondary_capture"
    conformance: Sequence[ConformanceCheck] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """Everything a model found in one study.

    `parts` holds masks and DICOM outputs in the order the viewer receives them. `None` leaves a key
    out of the JSON; free JSON (`study_ml_json`, `series_ml_json` values, `extra`) is sent as given.
    """

    parts: Sequence[Mask | DicomOutput] = ()
    bounding_boxes: Sequence[BoundingBox] | None = None
    linear_measurements: Sequence[LinearMeasurement] | None = None
    study_ml_json: Any = None
    series_ml_json: Mapping[str, Any] | None = None
    palettes: Mapping[str, Palette | Mapping] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
