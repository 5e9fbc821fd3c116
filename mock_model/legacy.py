"""Two outputs of the mock model written as unchanged Arterys-style handlers (the original SDK's form).

Run with `python -m worker --model mock_model.legacy:legacy_model`. The tests check that these answers
reach the viewer byte for byte like the typed MockModel's.
"""

from __future__ import annotations

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_geometry import slice_order
from mock_model import shapes
from mock_model.conformance import conformance_checks
from worker import LegacyHandlerModel


def _series(dicom_instances):
    """Headers grouped by series, each in the protocol's slice order, with its number of time points.

    The order is `dicom_geometry.slice_order`, the worker's own rule, so that this handler's masks line
    up with the typed MockModel's. The original gateway passes attachments (reports, JSON, images) ahead
    of the instances in the same list, so buffers that are not DICOM are skipped, as a real handler must.
    """
    groups = {}
    for buffer in dicom_instances:
        try:
            dcm = pydicom.dcmread(buffer, stop_before_pixels=True)
        except InvalidDicomError:
            continue
        groups.setdefault(dcm.SeriesInstanceUID, []).append(dcm)
    ordered = {}
    for uid, headers in groups.items():
        order = slice_order(headers)
        ordered[uid] = ([headers[index] for index in order.order], order.timepoints)
    return ordered


def handler(json_input, dicom_instances, input_hash):
    command = json_input.get("inference_command", "get-bounding-box-2d")
    groups = _series(dicom_instances)
    if command == "get-bounding-box-2d":
        boxes = []
        for headers, _ in groups.values():
            frames = [(d, f) for d in headers for f in range(int(getattr(d, "NumberOfFrames", 1) or 1))]
            dcm, frame = frames[len(frames) // 2]
            top_left, bottom_right = shapes.box_corners(dcm.Rows, dcm.Columns)
            box = {"label": "mock finding", "SOPInstanceUID": dcm.SOPInstanceUID,
                   "top_left": top_left, "bottom_right": bottom_right}
            if int(getattr(dcm, "NumberOfFrames", 1) or 1) > 1:
                box["frame_number"] = frame + 1
            boxes.append(box)
        return {"protocol_version": "1.0", "parts": [], "bounding_boxes_2d": boxes}, []

    parts, masks = [], []
    for uid, (headers, timepoints) in groups.items():
        depth = sum(int(getattr(d, "NumberOfFrames", 1) or 1) for d in headers) // timepoints
        rows, cols = headers[0].Rows, headers[0].Columns
        mask = shapes.volume(shapes.probability_slice, timepoints, depth, rows, cols)
        parts.append({
            "label": "mock probability_mask", "binary_type": "probability_mask",
            "binary_data_shape": {"timepoints": timepoints, "depth": depth, "width": cols, "height": rows},
            "SeriesInstanceUID": uid,
            "probability_threshold": 0.5,
            "dicomConformance": {"recommended": conformance_checks(headers)},
        })
        masks.append(mask)
    return {"protocol_version": "1.0", "parts": parts}, masks


legacy_model = LegacyHandlerModel(
    handler, name="mock_legacy", commands=("get-bounding-box-2d", "get-probability-mask"),
    default_command="get-bounding-box-2d",
)
