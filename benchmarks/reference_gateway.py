"""The reference: the original SDK's architecture, rebuilt so that the benchmark can measure it.

One Flask app on Flask's threaded development server; the request body read whole with
`request.get_data()`, parsed in memory with requests_toolbelt's `MultipartDecoder`; the handler called
in-process; the answer built in memory with `MultipartEncoder`; hashes as the protocol defines them.

    python -m benchmarks.reference_gateway --listen 127.0.0.1:0   # prints "listening on PORT"
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys

import numpy
from flask import Flask, Response, request
from requests_toolbelt import MultipartDecoder, MultipartEncoder
from werkzeug.serving import make_server

from benchmarks.original_handlers import handler


def create_app(inference_handler=handler) -> Flask:
    app = Flask("reference_gateway")

    @app.route("/healthcheck", methods=["GET", "POST"])
    def healthcheck():
        return "READY"

    @app.route("/", methods=["POST"])
    def inference():
        data = request.get_data()
        parts = MultipartDecoder(data, request.headers["Content-Type"]).parts
        input_hash = hashlib.sha256()
        for part in parts:
            input_hash.update(part.content)
        json_input = json.loads(parts[0].content)
        dicom_instances = [io.BytesIO(part.content) for part in parts[1:]]
        response_json, buffers = inference_handler(json_input, dicom_instances, input_hash.hexdigest())

        json_bytes = json.dumps(response_json).encode()
        output_hash = hashlib.sha256(json_bytes)
        fields = [("json", (None, json_bytes, "application/json"))]
        for index, buffer in enumerate(buffers):
            data = buffer.tobytes() if isinstance(buffer, numpy.ndarray) else buffer
            output_hash.update(data)
            fields.append((f"binary{index}", (None, data, "application/binary")))
        fields.append(("hashes", (None, f"{input_hash.hexdigest()}:{output_hash.hexdigest()}", "text/plain")))
        encoder = MultipartEncoder(fields=fields)
        return Response(encoder.to_string(), content_type=f"multipart/related; boundary={encoder.boundary_value}")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = make_server(host, int(port), create_app(), threaded=True)
    print(f"listening on {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
