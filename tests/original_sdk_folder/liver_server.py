"""
Liver segmentation service for the Arterys app, written for the Arterys inference SDK: run it with
`python liver_server.py` from this folder (gateway.py, utils/ and logging.yaml beside it).
"""

import logging
import logging.config

import numpy
import pydicom
import yaml

from utils import tagged_logger

# ensure logging is configured before flask is initialized
with open('logging.yaml', 'r') as f:
    conf = yaml.safe_load(f.read())
    logging.config.dictConfig(conf)

logger = logging.getLogger('inference')

from gateway import Gateway
from flask import make_response

# Liver parenchyma in Hounsfield units (unenhanced CT)
LIVER_HU = (55, 75)


def handle_exception(e):
    logger.exception('internal server error %s', e)
    return 'internal server error', 500


def healthcheck_handler():
    return make_response('READY', 200)


def load_volume(dicom_instances):
    slices = [pydicom.read_file(f) for f in dicom_instances]
    # head last, as the viewer stacks an axial series
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    volume = numpy.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices])
    return slices, volume


def get_liver_mask_response(json_input, dicom_instances, transaction_logger):
    slices, volume = load_volume(dicom_instances)
    liver = (volume >= LIVER_HU[0]) & (volume <= LIVER_HU[1])
    transaction_logger.info('liver found in {} of {} slices'.format(int(liver.any(axis=(1, 2)).sum()), len(slices)))
    response_json = {
        'protocol_version': '1.0',
        'parts': [
            {
                'label': 'Liver',
                'binary_type': 'probability_mask',
                'binary_data_shape': {
                    'timepoints': 1,
                    'depth': len(slices),
                    'width': slices[0].Columns,
                    'height': slices[0].Rows
                }
            }
        ]
    }
    return response_json, [liver.astype(numpy.uint8) * 255]


def get_liver_box_response(json_input, dicom_instances, transaction_logger):
    slices, volume = load_volume(dicom_instances)
    liver = (volume >= LIVER_HU[0]) & (volume <= LIVER_HU[1])
    largest = int(liver.sum(axis=(1, 2)).argmax())
    rows, cols = numpy.nonzero(liver[largest])
    return {
        'protocol_version': '1.0',
        'parts': [],
        'bounding_boxes_2d': [
            {
                'label': 'Liver',
                'SOPInstanceUID': slices[largest].SOPInstanceUID,
                'top_left': [int(cols.min()), int(rows.min())],
                'bottom_right': [int(cols.max()), int(rows.max())]
            }
        ]
    }, []


def request_handler(json_input, dicom_instances, input_digest):
    transaction_logger = tagged_logger.TaggedLogger(logger)
    transaction_logger.add_tags({'input_hash': input_digest})
    transaction_logger.info('liver model received json_input={}'.format(json_input))
    if json_input.get('inference_command') == 'get-bounding-box-2d':
        return get_liver_box_response(json_input, dicom_instances, transaction_logger)
    return get_liver_mask_response(json_input, dicom_instances, transaction_logger)


if __name__ == '__main__':
    app = Gateway(__name__)
    app.register_error_handler(Exception, handle_exception)
    app.add_inference_route('/', request_handler)
    app.add_healthcheck_route(healthcheck_handler)
    app.run(host='0.0.0.0', port=8000, debug=True, use_reloader=True)
