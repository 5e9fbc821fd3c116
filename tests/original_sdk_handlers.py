"""Handlers exactly in the style of the original Arterys SDK's mock_server.py, for tests/test_legacy_handlers.py.

Nothing here is adapted to this project: module-level `import pydicom` and `pydicom.read_file(...)` (gone
in pydicom 3), the mask's shape from `json_input['depth']`/`['height']`/`['width']` (which the original
test tool sent), a 3D mask part without `SeriesInstanceUID`, the command read with `json_input[...]`.
The worker hosts the plain function: `--model tests.original_sdk_handlers:request_handler`.
"""

import logging

import numpy
import pydicom

logger = logging.getLogger('inference')


def get_bounding_box_2d_response(json_input, dicom_instances):
    dcm = pydicom.read_file(dicom_instances[0])
    response_json = {
        'protocol_version': '1.0',
        'parts': [],
        'bounding_boxes_2d': [
            {
                'label': 'super bbox',
                'SOPInstanceUID': dcm.SOPInstanceUID,
                'top_left': [5, 5],
                'bottom_right': [10, 10]
            }
        ]
    }
    return response_json, []


def get_probability_mask_3D_response(json_input, dicom_instances):
    # Assuming that all files have the same size
    dcm = pydicom.read_file(dicom_instances[0])

    response_json = {
        'protocol_version': '1.0',
        'parts': [
            {
                'label': 'Mock seg',
                'binary_type': 'probability_mask',
                'binary_data_shape': {
                    'timepoints': 1,
                    'depth': len(dicom_instances),
                    'width': dcm.Columns,
                    'height': dcm.Rows
                }
            }
        ]
    }

    array_shape = (json_input['depth'], json_input['height'], json_input['width'])

    # This code produces a mask that grows from the center of the image outwards as the image slices advance
    mask = numpy.zeros(array_shape, dtype=numpy.uint8)
    mid_x = int(json_input['width'] / 2)
    mid_y = int(json_input['height'] / 2)
    for s in range(json_input['depth']):
        offset_x = int(s / json_input['depth'] * mid_x)
        offset_y = int(s / json_input['depth'] * mid_y)
        indices = numpy.ogrid[mid_y - offset_y : mid_y + offset_y, mid_x - offset_x : mid_x + offset_x]
        mask[s][tuple(indices)] = 255

    return response_json, [mask]


def request_handler(json_input, dicom_instances, input_digest):
    logger.info('mock_model received json_input={}'.format(json_input))
    if json_input['inference_command'] == 'get-bounding-box-2d':
        return get_bounding_box_2d_response(json_input, dicom_instances)
    return get_probability_mask_3D_response(json_input, dicom_instances)
