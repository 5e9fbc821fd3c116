"""The original SDK's mock handlers, in the original style: `handler(json_input, dicom_instances, input_hash)`.

The benchmark runs exactly this code in both architectures: inside the reference gateway (the original
single-process design) and hosted unchanged in our worker (`--model benchmarks.original_handlers:model`),
so that the figures compare the plumbing, not two different models.

Commands: `get-bounding-box-2d` (default), `get-probability-mask` (a 3D mask over the series),
`get-probability-mask-2d` (one 2D mask per image), `sleep` (a box after 100 ms: a model that is busy).
"""

from __future__ import annotations

import time

import numpy
import pydicom

from worker import LegacyHandlerModel


def get_bounding_box_2d_response(json_input, dicom_instances):
    dcm = pydicom.dcmread(dicom_instances[0])
    response_json = {
        "protocol_version": "1.0",
        "parts": [],
        "bounding_boxes_2d": [
            {"label": "super bbox", "SOPInstanceUID": dcm.SOPInstanceUID, "top_left": [5, 5], "bottom_right": [10, 10]}
        ],
    }
    return response_json, []


def get_probability_mask_3d_response(json_input, dicom_instances):
    # Assuming that all files have the same size
    dcm = pydicom.dcmread(dicom_instances[0])
    depth = len(dicom_instances)
    image_width = dcm.Columns
    image_height = dcm.Rows
    response_json = {
        "protocol_version": "1.0",
        "parts": [{
            "label": "Mock seg",
            "binary_type": "probability_mask",
            "binary_data_shape": {"timepoints": 1, "depth": depth, "width": image_width, "height": image_height},
            "SeriesInstanceUID": dcm.SeriesInstanceUID,
        }],
    }
    # A mask that grows from the centre of the image outwards as the slices advance.
    mask = numpy.zeros((depth, image_height, image_width), dtype=numpy.uint8)
    mid_x, mid_y = image_width // 2, image_height // 2
    for s in range(depth):
        offset_x = int(s / depth * mid_x)
        offset_y = int(s / depth * mid_y)
        mask[s, mid_y - offset_y:mid_y + offset_y, mid_x - offset_x:mid_x + offset_x] = 255
    return response_json, [mask]


def get_probability_mask_2d_response(json_input, dicom_instances):
    response_json = {"protocol_version": "1.0", "parts": []}
    masks = []
    for dicom_file in dicom_instances:
        dcm = pydicom.dcmread(dicom_file)
        response_json["parts"].append({
            "label": "Mock seg 2D",
            "binary_type": "probability_mask",
            "binary_data_shape": {"width": dcm.Columns, "height": dcm.Rows},
            "dicom_image": {"SOPInstanceUID": dcm.SOPInstanceUID},
        })
        mask = numpy.zeros((dcm.Rows, dcm.Columns), dtype=numpy.uint8)
        mask[dcm.Rows // 4:dcm.Rows * 3 // 4, dcm.Columns // 4:dcm.Columns * 3 // 4] = 200
        masks.append(mask)
    return response_json, masks


def handler(json_input, dicom_instances, input_hash):
    command = json_input.get("inference_command", "get-bounding-box-2d")
    if command == "get-probability-mask":
        return get_probability_mask_3d_response(json_input, dicom_instances)
    if command == "get-probability-mask-2d":
        return get_probability_mask_2d_response(json_input, dicom_instances)
    if command == "sleep":
        time.sleep(0.1)
    return get_bounding_box_2d_response(json_input, dicom_instances)


model = LegacyHandlerModel(handler, name="original_mock")
