"""A study larger than 300 MiB through one Infer call, with a client that keeps gRPC's default limits.

Nothing in the stream may need a message above gRPC's 4 MiB default: the study goes up in 1 MiB chunks
and the mask (about 160 MiB) comes back in chunks.
"""

from __future__ import annotations

import hashlib

import grpc
import numpy as np
import pytest

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from tests.dicom_factory import write_big_study
from tests.test_worker_commands import expected_slice, value_at
from tests.worker_client import collect

STUDY_BYTES = 310 << 20
CHUNK = 1 << 20


def streamed_request(request_json: bytes, paths):
    """Reads each file in 1 MiB chunks as gRPC asks for messages: the client never holds the study."""
    yield pb.InferRequest(header=pb.RequestHeader(request_json=request_json,
                                                  inference_command="get-probability-mask"))
    digest = hashlib.sha256(request_json)
    for path in paths:
        yield pb.InferRequest(part=pb.PartHeader(kind=pb.PART_KIND_DICOM, content_type="application/dicom",
                                                 filename=path.name))
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                yield pb.InferRequest(chunk=chunk)
    yield pb.InferRequest(end=pb.RequestEnd(input_hash=digest.hexdigest(), part_count=len(paths)))


@pytest.fixture(scope="module")
def big_study(tmp_path_factory):
    return write_big_study(tmp_path_factory.mktemp("big") / "study", STUDY_BYTES)


def test_study_over_300_mib_in_one_call(mock_worker, big_study):
    paths = [i.path for i in big_study.instances]
    total = sum(p.stat().st_size for p in paths)
    assert total > 300 << 20

    # No channel options: gRPC's default 4 MiB receive limit must be enough for every message.
    with grpc.insecure_channel(f"127.0.0.1:{mock_worker.port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        answer = collect(stub.Infer(streamed_request(b'{"inference_command": "get-probability-mask"}', paths),
                                    timeout=240))

    series_uid = big_study.series[0].series_uid
    depth, rows, cols = len(big_study.instances), big_study.series[0].rows, big_study.series[0].cols
    assert len(answer.json["parts"]) == len(answer.binaries) == 1
    part = answer.json["parts"][0]
    assert part["SeriesInstanceUID"] == series_uid
    assert part["binary_data_shape"] == {"timepoints": 1, "depth": depth, "width": cols, "height": rows}
    mask = answer.binaries[0]
    assert len(mask) == depth * rows * cols == answer.result.parts[0].binary_size

    volume = np.frombuffer(mask, dtype=np.uint8).reshape(depth, rows, cols)
    for z in (0, depth // 2, depth - 1):
        assert volume[z].tobytes() == expected_slice("probability_mask", rows, cols, z, depth).tobytes(), z
    for z, y, x in [(3, 600, 400), (depth - 2, 10, 1000), (depth // 3, 614, 409), (77, 900, 100)]:
        assert mask[z * rows * cols + y * cols + x] == value_at("probability_mask", y, x, rows, cols, z, depth)
