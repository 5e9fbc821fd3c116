"""Handlers of the original SDK, unchanged (tests/original_sdk_handlers.py), through a real worker and bridge.

The reference is the same handler under the original architecture (benchmarks/reference_gateway.py, the
original gateway rebuilt), sent what the original test tool sent (`-c COMMAND -S`). Through the bridge the
request names no command and no study size: the legacy shims (worker/sdk/legacy_shims.py) must make up for
both, for pydicom 3's missing `read_file` and for the mask's missing SeriesInstanceUID, so that the viewer
gets the reference's mask byte for byte. The shims must not reach a typed Model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pydicom
import pytest
from requests_toolbelt import MultipartEncoder
from requests_toolbelt.multipart import decoder

from benchmarks.reference_gateway import create_app
from tests import http_helpers as http
from tests import original_sdk_handlers
from tests.dicom_factory import SeriesSpec, write_standard_study, write_study
from tests.services import ROOT, start_bridge, start_worker
from tests.worker_client import dicom_parts, infer, stub_for

HANDLER = "tests.original_sdk_handlers:request_handler"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("legacy")
    # The plain function, hosted as it is; the command a request names none of comes from the worker.
    worker = start_worker(tmp, HANDLER, "--default-command", "get-probability-mask")
    bridge = start_bridge(tmp, worker.address)
    yield worker, bridge
    bridge.stop()
    worker.stop()


@pytest.fixture(scope="module")
def one_series(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("one") / "study", [SeriesSpec("ct axial", rows=32, cols=48, count=6)])


def reference_answer(monkeypatch, request_json: dict, paths) -> tuple[dict, list[bytes]]:
    """What the original gateway answered: its handler with pydicom 2's read_file."""
    monkeypatch.setattr(pydicom, "read_file", pydicom.dcmread, raising=False)
    encoder = MultipartEncoder(fields=http.original_tool_fields(request_json, paths))
    client = create_app(original_sdk_handlers.request_handler).test_client()
    response = client.post("/", data=encoder.to_string(), content_type=encoder.content_type)
    assert response.status_code == 200, response.data[:500]
    parts = decoder.MultipartDecoder(response.data, response.content_type).parts
    return json.loads(parts[0].content), [part.content for part in parts[1:-1]]


def original_tool_request(command: str, study) -> dict:
    """`-c COMMAND -S` of the original test tool: depth = instances sent, height/width of the first."""
    first = study.instances[0]
    return {"inference_command": command, "depth": len(study.instances), "height": first.rows, "width": first.cols}


def test_an_unchanged_handler_answers_like_the_original_gateway(stack, one_series, monkeypatch):
    worker, bridge = stack
    paths = [i.path for i in one_series.instances]
    response = http.post_like_original_tool(f"http://{bridge.address}/", {}, paths, timeout=60)
    answer = http.parse_answer(response)

    expected_json, expected_binaries = reference_answer(
        monkeypatch, original_tool_request("get-probability-mask", one_series), paths)
    (uid,) = {i.series_instance_uid for i in one_series.instances}
    assert "SeriesInstanceUID" not in expected_json["parts"][0]
    expected_json["parts"][0]["SeriesInstanceUID"] = uid  # the one thing the shims add to the answer
    assert answer.json == expected_json
    assert answer.binaries == expected_binaries  # the mask, byte for byte
    assert answer.binaries[0].count(255) > 0
    assert answer.hashes == http.expected_hashes_line(http.request_part_contents({}, paths), answer)

    # A command named in the request wins over the default.
    request = {"inference_command": "get-bounding-box-2d"}
    boxes = http.parse_answer(http.post_like_original_tool(f"http://{bridge.address}/", request, paths, timeout=60))
    expected_json, _ = reference_answer(monkeypatch, original_tool_request("get-bounding-box-2d", one_series), paths)
    assert boxes.json == expected_json

    log = worker.log()
    assert log.count("DeprecationWarning: pydicom.read_file was removed in pydicom 3") == 1, log


def test_a_mask_without_series_on_a_study_of_several_series_is_refused_by_name(stack, tmp_path):
    worker, bridge = stack
    study = write_standard_study(tmp_path / "study")
    response = http.post_like_original_tool(f"http://{bridge.address}/", {}, [i.path for i in study.instances],
                                            timeout=60)
    assert response.status_code == 502, response.text
    assert "parts[0].SeriesInstanceUID: a 3D mask must name the series it covers" in response.text
    assert "parts[0] is a 3D mask without SeriesInstanceUID and the study has 4 series" in worker.log()


def test_from_pydicom_import_read_file_works_for_a_handler_only(tmp_path, one_series):
    (tmp_path / "old_handler.py").write_text(textwrap.dedent("""
        from pydicom import read_file

        def handler(json_input, dicom_instances, input_hash):
            dcm = read_file(dicom_instances[0])
            return {"bounding_boxes_2d": [{"label": "old", "SOPInstanceUID": dcm.SOPInstanceUID,
                                           "top_left": [1, 1], "bottom_right": [2, 2]}]}, []
    """))
    (tmp_path / "typed_reader.py").write_text(textwrap.dedent("""
        from pydicom import read_file
        from worker import Model

        class Reader(Model):
            def infer(self, study):
                raise AssertionError("never loaded")
    """))
    typed = subprocess.Popen([sys.executable, "-m", "worker", "--model", "typed_reader:Reader", "--model-dir",
                              str(tmp_path), "--listen", "127.0.0.1:0"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    worker = start_worker(tmp_path, "old_handler:handler", "--model-dir", str(tmp_path))
    try:
        answer = infer(stub_for(worker.port), {}, dicom_parts([one_series.instances[0].path]))
        assert answer.json["bounding_boxes_2d"][0]["SOPInstanceUID"] == one_series.instances[0].sop_instance_uid
        assert answer.json["protocol_version"] == "1.0" and answer.json["parts"] == []  # the gateway's defaults
    finally:
        worker.stop()
    _, stderr = typed.communicate(timeout=60)
    assert typed.returncode == 2
    assert stderr.splitlines() == [
        "worker: --model 'typed_reader:Reader': typed_reader imports pydicom.read_file or write_file, removed in "
        "pydicom 3 and given back to legacy handlers only: use pydicom.dcmread / dcmwrite"]


def test_a_typed_model_gets_no_shim(tmp_path, one_series):
    (tmp_path / "typed_model.py").write_text(textwrap.dedent("""
        import pydicom
        from worker import Model, Result

        class Typed(Model):
            def infer(self, study):
                return Result(study_ml_json={"read_file": hasattr(pydicom, "read_file"),
                                             "request": study.request})
    """))
    worker = start_worker(tmp_path, "typed_model:Typed", "--model-dir", str(tmp_path))
    try:
        answer = infer(stub_for(worker.port), {"x": 1}, dicom_parts([i.path for i in one_series.instances]))
    finally:
        worker.stop()
    assert answer.json["study_ml_json"] == {"read_file": False, "request": {"x": 1}}  # no depth/height/width
