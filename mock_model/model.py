"""The mock model: every output type of docs/protocol.md, chosen by `inference_command`.

Outputs follow the real input: mask sizes come from each instance's rows, columns and frames, 3D masks
cover one series each with slices ordered along the slice normal, 2D masks come one per image (one per
frame of a multi-frame instance). Every mask part carries conformance results about its input.
"""

from __future__ import annotations

import numpy as np

from mock_model import shapes
from mock_model.conformance import conformance_checks
from mock_model.dicom_outputs import secondary_capture, structured_report
from worker import (
    BoundingBox,
    DicomOutput,
    InvalidInput,
    LinearMeasurement,
    Mask,
    Model,
    Palette,
    Result,
    Series,
    Study,
)

HEATMAP_PALETTE = Palette([(0.0, (0, 0, 255, 0)), (0.5, (0, 255, 0, 128)), (1.0, (255, 0, 0, 255))])
LABEL_MAP = {1: "core", 2: "rim"}


def series_conformance(series: Series) -> list[dict]:
    return conformance_checks([i.header for i in series.instances])


def image_frames(study: Study):
    """(instance, frame_number or None, slice index, slice count) for every image, series by series."""
    for series in study.series:
        index = 0
        for instance in series.instances:
            for frame in range(instance.frames):
                yield series, instance, (frame + 1 if instance.frames > 1 else None), index
                index += 1


def middle_image(series: Series):
    """The instance and frame number (or None) in the middle of a series."""
    middle = series.frame_count // 2
    for instance in series.instances:
        if middle < instance.frames:
            return instance, (middle + 1 if instance.frames > 1 else None)
        middle -= instance.frames
    raise AssertionError("unreachable: middle < frame_count")


class MockModel(Model):
    name = "mock_model"
    version = "1.0"
    commands = (
        "get-bounding-box-2d",
        "get-probability-mask",
        "get-probability-mask-2d",
        "get-boolean-mask",
        "get-heatmap",
        "get-label-mask",
        "get-classification",
        "get-linear-measurements",
        "get-secondary-capture",
        "get-structured-report",
    )
    default_command = "get-bounding-box-2d"

    def infer(self, study: Study) -> Result:
        if not study.instances:
            raise InvalidInput("the request holds no DICOM instance; send at least one application/dicom part")
        for instance in study.instances:
            # Every output here is drawn on images: an instance without Rows and Columns (a report, or a file
            # whose damaged header hides them) would give boxes and masks of a 0 x 0 image.
            if instance.rows <= 0 or instance.columns <= 0:
                raise InvalidInput(f"{instance.label} holds no image (no Rows and Columns); this model reads images")
        handler = getattr(self, "_" + study.command.removeprefix("get-").replace("-", "_"))
        return handler(study)

    # ---------------------------------------------------------------------------- annotations

    def _bounding_box_2d(self, study: Study) -> Result:
        boxes = []
        for series in study.series:
            instance, frame = middle_image(series)
            top_left, bottom_right = shapes.box_corners(instance.rows, instance.columns)
            boxes.append(BoundingBox("mock finding", instance.sop_instance_uid, top_left, bottom_right, frame))
        return Result(bounding_boxes=boxes)

    def _linear_measurements(self, study: Study) -> Result:
        items = []
        for series in study.series:
            instance, frame = middle_image(series)
            rows, cols = instance.rows, instance.columns
            items.append(LinearMeasurement(
                "mock width", instance.sop_instance_uid, [cols // 5, rows // 2], [(cols * 3) // 5, rows // 2],
                "pixel", frame,
            ))
            position = instance.position
            if position is not None:
                start = [round(position[0], 3), round(position[1], 3)]
                end = [round(position[0] + 10.5, 3), round(position[1], 3)]
                items.append(LinearMeasurement("mock world", instance.sop_instance_uid, start, end, "world", frame))
        return Result(linear_measurements=items)

    def _classification(self, study: Study) -> Result:
        series_json = {
            series.uid: {"label": "normal" if i % 2 else "abnormal", "score": round(0.25 + 0.5 * (i % 2), 2),
                         "slices": series.frame_count}
            for i, series in enumerate(study.series)
        }
        study_json = {
            "label": "abnormal" if len(study.series) % 2 else "normal",
            "probability": 0.87,
            "series_count": len(study.series),
            "instance_count": len(study.instances),
            "findings": [{"name": "mock nodule", "count": 2}],
            "command": study.command,
        }
        return Result(study_ml_json=study_json, series_ml_json=series_json)

    # ---------------------------------------------------------------------------------- masks

    def _volume_masks(self, study: Study, binary_type: str, slice_fn, **options) -> Result:
        parts = []
        for series in study.series:
            timepoints, depth, height, width = series.mask_shape()
            array = shapes.volume(slice_fn, timepoints, depth, height, width)
            if timepoints == 1:
                array = array[0]  # (depth, height, width): the common 3D form
            parts.append(Mask(f"mock {binary_type}", array, binary_type, series_instance_uid=series.uid,
                              conformance=series_conformance(series), **options))
        return parts

    def _probability_mask(self, study: Study) -> Result:
        return Result(parts=self._volume_masks(study, "probability_mask", shapes.probability_slice,
                                               probability_threshold=0.5))

    def _boolean_mask(self, study: Study) -> Result:
        return Result(parts=self._volume_masks(study, "boolean_mask", shapes.boolean_slice))

    def _heatmap(self, study: Study) -> Result:
        parts = self._volume_masks(study, "heatmap", shapes.probability_slice, palette="mock_heatmap")
        return Result(parts=parts, palettes={"mock_heatmap": HEATMAP_PALETTE})

    def _label_mask(self, study: Study) -> Result:
        parts = []
        for series in study.series:
            timepoints, depth, height, width = series.mask_shape()
            labels = shapes.volume(shapes.label_slice, timepoints, depth, height, width)
            # Built column-major then transposed back: a non-contiguous view, as real pipelines produce.
            transposed = np.asfortranarray(labels)
            array = transposed[0] if timepoints == 1 else transposed
            parts.append(Mask("mock labels", array, "numeric_label_mask", series_instance_uid=series.uid,
                              label_map=LABEL_MAP, conformance=series_conformance(series)))
        return Result(parts=parts)

    def _probability_mask_2d(self, study: Study) -> Result:
        parts, conformance, counts = [], {}, {}
        for series, instance, frame, index in image_frames(study):
            if series.uid not in conformance:  # once per series: per image, 1,500 slices took 70 s
                conformance[series.uid], counts[series.uid] = series_conformance(series), series.frame_count
            array = shapes.probability_slice(instance.rows, instance.columns, index, counts[series.uid])
            parts.append(Mask("mock 2d", array, "probability_mask", sop_instance_uid=instance.sop_instance_uid,
                              frame_number=frame, probability_threshold=0.5, conformance=conformance[series.uid]))
        return Result(parts=parts)

    # ------------------------------------------------------------------------------ DICOM outputs

    def _secondary_capture(self, study: Study) -> Result:
        parts = []
        for number, series in enumerate(study.series, start=1):
            instance, _ = middle_image(series)
            picture = shapes.probability_slice(instance.rows, instance.columns, series.frame_count // 2,
                                               series.frame_count)
            dataset = secondary_capture(instance.header, picture, f"Mock overlay, series {number}")
            parts.append(DicomOutput("mock secondary capture", dataset, "dicom_secondary_capture"))
        return Result(parts=parts)

    def _structured_report(self, study: Study) -> Result:
        findings = [f"Series {s.uid}: {s.frame_count} image(s) reviewed, mock finding present" for s in study.series]
        report = structured_report(study.instances[0].header, findings, [i.header for i in study.instances])
        return Result(parts=[DicomOutput("mock report", report, "dicom")])
