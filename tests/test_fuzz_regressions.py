"""Requests the fuzz tests (tests/test_fuzz_bridge.py) found answered wrongly, kept as plain tests."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
import requests

from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import start_bridge, start_worker
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


def test_a_study_refused_at_its_first_part_is_a_400_however_the_race_goes(tmp_path):
    """The worker refuses a study whose first instance is cut short while the bridge still streams the other
    parts. grpc.aio replaces the worker's INVALID_ARGUMENT by INTERNAL "Internal error from Core" when the
    bridge's next write fails after the status has arrived (grpc/grpc#36066): 502 instead of 400 for about one
    such request in six, unless service_runtime.grpc_aio.StreamCall keeps the status the worker sent."""
    study = write_study(tmp_path / "study", [SeriesSpec("ct", rows=16, cols=16, count=2)])
    dicoms = [i.path.read_bytes() for i in study.instances]
    body = http.hand_built_body([("application/json", b'{"inference_command": "get-bounding-box-2d"}'),
                                 ("application/dicom", dicoms[0][:-57])]
                                + [("application/dicom", d) for d in dicoms * 20], "race")
    worker = start_worker(tmp_path, "mock_model")
    bridge = start_bridge(tmp_path, worker.address)
    try:
        with requests.Session() as session:
            statuses = Counter(
                session.post(f"http://{bridge.address}/", data=body, timeout=30,
                             headers={"Content-Type": "multipart/related; boundary=race"}).status_code
                for _ in range(150))
    finally:
        bridge.stop()
        worker.stop()
    assert statuses == {400: 150}
