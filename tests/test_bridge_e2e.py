"""Real worker and bridge processes on loopback: every mock command over HTTP, as real clients send it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from mock_model import MockModel
from tests import http_helpers as http
from tests.dicom_factory import write_big_study, write_standard_study
from tests.services import mock_stack
from worker.sdk.study import Study
from worker.serving.instances import parse_instance
from worker.serving.results import from_result

LICENCE = ("licence.txt", b"licence: test-only\n")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_standard_study(tmp_path_factory.mktemp("study") / "study")


@pytest.fixture(scope="module")
def study_root(tmp_path_factory, study):
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(study.folder, root / "cases" / "case1")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copytree(study.folder, outside / "case2")
    (root / "cases" / "escape").symlink_to(outside / "case2", target_is_directory=True)
    linked = root / "cases" / "linked_file"
    linked.mkdir()
    (linked / "a.dcm").symlink_to(study.instances[0].path)
    return root, outside


@pytest.fixture(scope="module")
def stack(tmp_path_factory, study_root):
    with mock_stack(tmp_path_factory.mktemp("stack"), study_root[0]) as services:
        yield services


def model_answer(paths: list[Path], command: str) -> tuple[dict, list[bytes]]:
    """What MockModel produces for these files, computed in this process (the bytes the viewer must get)."""
    instances = [parse_instance(i, Path(p), "application/dicom", Path(p).name) for i, p in enumerate(paths)]
    study = Study(request={"inference_command": command}, command=command, input_hash="", instances=instances)
    result_json, binaries = from_result(MockModel().infer(study))
    return json.loads(json.dumps(result_json)), [bytes(b) for b in binaries]


DICOM_COMMANDS = ("get-secondary-capture", "get-structured-report")


@pytest.mark.parametrize("command", MockModel.commands)
def test_every_command_as_the_original_tool_sends_it(stack, study, command):
    paths = [i.path for i in study.instances]
    request_json = {"inference_command": command, "studyUID": study.study_instance_uid}
    response = http.post_like_original_tool(stack["url"] + "/", request_json, paths, [LICENCE])
    answer = http.parse_answer(response)

    assert answer.hashes == http.expected_hashes_line(http.request_part_contents(request_json, paths, [LICENCE]),
                                                      answer)
    assert len(answer.binaries) == len(answer.json["parts"])
    expected_json, expected_binaries = model_answer(paths, command)
    if command in DICOM_COMMANDS:
        assert answer.content_types == ["application/dicom"] * len(answer.binaries)
        assert [p["binary_type"] for p in answer.json["parts"]] == [p["binary_type"] for p in expected_json["parts"]]
        for binary in answer.binaries:
            dataset = pydicom.dcmread(pydicom.filebase.DicomBytesIO(binary))
            assert dataset.StudyInstanceUID == study.study_instance_uid
    else:
        assert answer.json == expected_json
        assert answer.binaries == expected_binaries
        assert answer.content_types == ["application/binary"] * len(answer.binaries)


def test_default_command_is_bounding_boxes(stack, study):
    paths = [i.path for i in study.instances]
    answer = http.parse_answer(http.post_like_original_tool(stack["url"] + "/", {}, paths))
    assert answer.json == model_answer(paths, "get-bounding-box-2d")[0]


def test_hand_built_request_with_only_content_types_bare_boundary_and_chunked_body(stack, study):
    paths = [i.path for i in study.instances[:5]]
    request_json = b'{"inference_command": "get-probability-mask-2d"}'
    body = http.hand_built_body(
        [("application/json", request_json)] + [("application/dicom", p.read_bytes()) for p in paths], "xyz123")

    def chunks():  # no Content-Length: requests sends Transfer-Encoding: chunked
        for start in range(0, len(body), 7777):
            yield body[start : start + 7777]

    response = requests.post(stack["url"] + "/", data=chunks(),
                             headers={"Content-Type": "Multipart/Related ; type=application/json; boundary=xyz123"})
    answer = http.parse_answer(response)
    assert answer.json == model_answer(paths, "get-probability-mask-2d")[0]
    assert answer.hashes == http.expected_hashes_line([request_json] + [p.read_bytes() for p in paths], answer)


def test_attachments_and_request_json_reach_the_model_untouched(stack, study):
    paths = [i.path for i in study.instances[:3]]
    request_json = {"inference_command": "probe", "depth": 3, "free option": "x", "nested": {"a": [1, 2.5]}}
    attachments = [LICENCE, ("config.bin", bytes(range(256)))]
    answer = http.parse_answer(http.post_like_original_tool(stack["url"] + "/probe", request_json, paths,
                                                            attachments))
    seen = answer.json["study_ml_json"]
    assert seen["request"] == request_json
    assert seen["route"] == "/probe"
    assert [a["filename"] for a in seen["attachments"]] == ["licence.txt", "config.bin"]
    assert [a["sha256"] for a in seen["attachments"]] == [hashlib.sha256(d).hexdigest() for _, d in attachments]
    assert [a["content_type"] for a in seen["attachments"]] == ["application/octet-stream"] * 2
    assert max(a["index"] for a in seen["attachments"]) < min(i["index"] for i in seen["instances"])
    assert [i["filename"] for i in seen["instances"]] == [p.name for p in paths]
    parts = http.request_part_contents(request_json, paths, attachments)
    assert seen["input_hash"] == hashlib.sha256(b"".join(parts)).hexdigest()


# ------------------------------------------------------------------------------------------ studyPath


def post_study_path(stack, study_path, command="get-bounding-box-2d") -> requests.Response:
    return requests.post(stack["url"] + "/", json={"studyPath": study_path, "inference_command": command})


def test_study_path_relative_and_absolute_inside_the_root(stack, study, study_root):
    root, _ = study_root
    expected = model_answer(sorted((root / "cases" / "case1").iterdir()), "get-probability-mask")
    for path in ("cases/case1", str(root / "cases" / "case1"), "cases/../cases/case1"):
        response = post_study_path(stack, path, "get-probability-mask")
        answer = http.parse_answer(response)
        assert answer.json == expected[0]
        assert answer.binaries == expected[1]
        body = json.dumps({"studyPath": path, "inference_command": "get-probability-mask"}).encode()
        assert answer.hashes.split(":")[0] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("path", ["../outside", "cases/../../etc", "/etc", "cases/escape", "cases/linked_file"])
def test_study_path_outside_the_root_is_refused(stack, study_root, path):
    response = post_study_path(stack, path)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "study_path_refused"
    assert "outside the study root" in response.json()["error"]["message"]


def test_study_path_missing_or_absent(stack, study_root):
    response = post_study_path(stack, "cases/nothing-here")
    assert response.status_code == 404
    assert "not a folder" in response.json()["error"]["message"]
    response = requests.post(stack["url"] + "/", json={"inference_command": "get-bounding-box-2d"})
    assert response.status_code == 400
    assert "studyPath" in response.json()["error"]["message"]


# ------------------------------------------------------------------------------------------ big study


def test_a_study_of_several_hundred_mib(stack, tmp_path):
    big = write_big_study(tmp_path / "big", 320 << 20)
    paths = [i.path for i in big.instances]
    assert sum(p.stat().st_size for p in paths) > 320 << 20
    request_json = {"inference_command": "get-probability-mask"}
    response = http.post_like_original_tool(stack["url"] + "/", request_json, paths, stream=True)
    answer = http.parse_answer(response)
    (part,) = answer.json["parts"]
    shape = part["binary_data_shape"]
    assert (shape["depth"], shape["height"], shape["width"]) == (len(paths), 1024, 1024)
    mask = np.frombuffer(answer.binaries[0], np.uint8).reshape(shape["depth"], 1024, 1024)
    # The ellipse of the mock model: centre at 60 % of the height and 40 % of the width, radius grows with z.
    assert mask[-1, int(1024 * 0.6), int(1024 * 0.4)] == 255
    assert mask[-1, 0, 0] == 0 and mask[0, 1023, 1023] == 0
    assert answer.hashes == http.expected_hashes_line(http.request_part_contents(request_json, paths), answer)
