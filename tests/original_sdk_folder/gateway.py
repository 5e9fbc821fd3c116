"""
HTTP gateway of the inference SDK: receives multipart/related inference requests from the Arterys app,
calls the registered handler with (json_input, dicom_instances, input_hash) and sends back its JSON and
buffers as a multipart/related answer.
"""

import functools
import hashlib
import json
import logging
from io import BytesIO

import flask
from flask import Flask, make_response
from requests_toolbelt import MultipartDecoder, MultipartEncoder

from utils import tagged_logger

logger = logging.getLogger('gateway')


class Gateway(Flask):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_url_rule('/ping', 'ping', lambda: make_response('pong', 200), methods=['GET', 'POST'])

    def add_healthcheck_route(self, handler_fn):
        self.add_url_rule('/healthcheck', 'healthcheck', handler_fn, methods=['GET', 'POST'])

    def add_inference_route(self, route, model_fn):
        self.add_url_rule(route, route, functools.partial(self._do_inference, model_fn), methods=['POST'])
        logger.info('added inference route %s' % route)

    def _do_inference(self, model_fn):
        request = flask.request
        if not request.content_type.startswith('multipart/related'):
            return make_response('invalid content-type {}'.format(request.content_type), 400)
        parts = MultipartDecoder(request.get_data(), request.content_type).parts
        input_hash = hashlib.sha256()
        for part in parts:
            input_hash.update(part.content)
        input_digest = input_hash.hexdigest()
        request_logger = tagged_logger.TaggedLogger(logger)
        request_logger.add_tags({'input_hash': input_digest})

        json_input = json.loads(parts[0].text)
        response_json, buffers = model_fn(json_input, [BytesIO(p.content) for p in parts[1:]], input_digest)

        binaries = [b if isinstance(b, bytes) else b.tobytes() for b in buffers]
        output_hash = hashlib.sha256(json.dumps(response_json).encode('utf-8'))
        for binary in binaries:
            output_hash.update(binary)
        request_logger.info('request processed')

        fields = [('json-body', ('json-body', json.dumps(response_json), 'application/json'))]
        for i, (desc, binary) in enumerate(zip(response_json['parts'], binaries)):
            mime = 'application/dicom' if desc['binary_type'].startswith('dicom') else 'application/binary'
            fields.append(('elem_{}'.format(i), ('elem_{}'.format(i), binary, mime)))
        fields.append(('hashes', ('hashes', input_digest + ':' + output_hash.hexdigest(), 'text/plain')))
        encoder = MultipartEncoder(fields)
        return make_response(encoder.to_string(), 200,
                             {'Content-Type': 'multipart/related; boundary={}'.format(encoder.boundary_value)})
