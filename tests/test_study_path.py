"""The studyPath form at the worker: a folder the worker reads itself, confined to its study root."""

from __future__ import annotations

import os

import grpc
import pytest

from mock_model import MockModel
from tests.conftest import serving
from tests.dicom_factory import write_standard_study
from tests.worker_client import collect, dicom_parts, infer, request_messages


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/study (a real study), plus folders and links that try to leave root; outside/ lies beyond it."""
    base = tmp_path_factory.mktemp("study_path")
    root, outside = base / "root", base / "outside"
    study = write_standard_study(root / "study")
    secret = write_standard_study(outside / "secret")
    (root / "empty").mkdir()
    (root / "empty" / "README.txt").write_text("no DICOM here")
    (root / "linked_out").symlink_to(outside / "secret", target_is_directory=True)
    (root / "alias").symlink_to(root / "study", target_is_directory=True)  # a link that stays inside
    with_file_link = root / "file_link"
    with_file_link.mkdir()
    os.link(study.instances[0].path, with_file_link / "own.dcm")
    (with_file_link / "stolen.dcm").symlink_to(secret.instances[0].path)
    with_folder_link = root / "folder_link"
    with_folder_link.mkdir()
    os.link(study.instances[1].path, with_folder_link / "own.dcm")
    (with_folder_link / "more").symlink_to(outside / "secret", target_is_directory=True)
    return {"root": root, "outside": outside, "study": study, "secret": secret}


@pytest.fixture(scope="module")
def rooted_stub(tree):
    with serving(MockModel(), model="mock_model", study_root=str(tree["root"])) as (_, _, stub):
        yield stub


def by_path(stub, study_path: str, command: str = "get-classification"):
    request = {"inference_command": command, "studyPath": study_path}
    return infer(stub, request, [], study_path=study_path)


def refused(stub, study_path: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        by_path(stub, study_path)
    return caught.value


def test_relative_and_absolute_paths_inside_the_root(rooted_stub, tree):
    study = tree["study"]
    for path in ("study", str(tree["root"] / "study"), "study/../study", "alias"):
        answer = by_path(rooted_stub, path)
        assert answer.json["study_ml_json"]["instance_count"] == len(study.instances) == 14, path
        assert answer.json["study_ml_json"]["series_count"] == 4
        assert set(answer.json["series_ml_json"]) == {s.series_uid for s in study.series}

    boxes = by_path(rooted_stub, "study", "get-bounding-box-2d").json["bounding_boxes_2d"]
    assert {b["SOPInstanceUID"] for b in boxes} <= {i.sop_instance_uid for i in study.instances}
    assert len(boxes) == 4


@pytest.mark.parametrize("path", [
    "../outside/secret",
    "study/../../outside/secret",
    "OUTSIDE_ABSOLUTE",
    "linked_out",
    "file_link",
    "folder_link",
])
def test_paths_leaving_the_root_are_refused(rooted_stub, tree, path):
    path = str(tree["outside"] / "secret") if path == "OUTSIDE_ABSOLUTE" else path
    error = refused(rooted_stub, path)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert "outside the study root" in error.details()


@pytest.mark.parametrize("path, message", [
    ("missing", "is not a folder"),
    ("empty", "holds no DICOM file"),
    ("study/../missing", "is not a folder"),
])
def test_missing_or_empty_folders_are_not_found(rooted_stub, path, message):
    error = refused(rooted_stub, path)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert message in error.details()
    assert path not in error.details()  # folder names often hold a patient's, and messages reach logs


def test_a_file_instead_of_a_folder_is_not_found(rooted_stub, tree):
    error = refused(rooted_stub, str(tree["study"].instances[0].path.relative_to(tree["root"])))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_without_a_study_root_study_paths_are_refused(tree):
    with serving(MockModel(), model="mock_model") as (_, _, stub):
        error = refused(stub, str(tree["root"] / "study"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--study-root" in error.details() and "WORKER_STUDY_ROOT" in error.details()


# ------------------------------------------------------------------------ the stream around the path


def test_the_input_hash_is_the_hash_of_the_json_and_is_checked(rooted_stub):
    request = {"inference_command": "get-classification", "studyPath": "study"}
    answer = by_path(rooted_stub, "study")  # test client sends sha256(JSON) as docs/protocol.md defines it
    assert answer.json["study_ml_json"]["instance_count"] == 14

    with pytest.raises(grpc.RpcError) as caught:
        infer(rooted_stub, request, [], study_path="study", input_hash="0" * 64)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "0" * 64 in caught.value.details()


def test_a_study_path_request_carrying_parts_is_refused(rooted_stub, tree):
    request = {"inference_command": "get-classification", "studyPath": "study"}
    parts = dicom_parts([tree["study"].instances[0].path])
    with pytest.raises(grpc.RpcError) as caught:
        infer(rooted_stub, request, parts, study_path="study")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "carries no parts" in caught.value.details()


def test_a_study_path_stream_without_its_end_message_is_refused(rooted_stub):
    request = {"inference_command": "get-classification", "studyPath": "study"}
    header_only = list(request_messages(request, [], study_path="study"))[:1]
    with pytest.raises(grpc.RpcError) as caught:
        collect(rooted_stub.Infer(iter(header_only), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "without an end message" in caught.value.details()
