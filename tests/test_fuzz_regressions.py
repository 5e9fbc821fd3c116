"""Requests the fuzz tests (tests/test_fuzz_bridge.py) found answered wrongly, kept as plain tests."""

from __future__ import annotations

import grpc
import pytest

from tests.dicom_factory import SeriesSpec, write_study
from tests.worker_client import dicom_parts, infer


def test_an_instance_whose_damaged_header_hides_its_image_is_a_bad_request(worker_stub, tmp_path):
    """200 bytes of a CT file repeated inside its header: pydicom still reads a SOPInstanceUID but no Rows,
    Columns or PixelData. The mock model drew its box on that 0 x 0 image, which the worker's checks turned
    into a 502 (bad_worker_answer); the input is at fault, so it is a 400 naming the part."""
    study = write_study(tmp_path / "study", [SeriesSpec("ct", rows=16, cols=16, count=2)])
    original = study.instances[0].path.read_bytes()
    damaged = original[:388] + original[388:588] + original[388:]
    parts = dicom_parts([study.instances[1].path])
    parts.insert(0, (parts[0][0], parts[0][1], damaged))
    with pytest.raises(grpc.RpcError) as refused:
        infer(worker_stub, {"inference_command": "get-bounding-box-2d"}, parts)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "part 1" in refused.value.details() and "no image" in refused.value.details()
