"""DICOM outputs through real processes: `python -m worker` (the mock model, example_models.hounsfield) behind
`python -m bridge`, asked for by the request's "output_formats" or by the worker's --output-formats.

Every SEG and SR that comes back is read with pydicom and highdicom, its pixels compared with the Arterys
mask of the same model on the same study (or with the phantom's known labels), every UID it references
looked up in the study sent, and dciodvfy run on it: the helpers of tests/test_dicom_export.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests

from example_models.hounsfield import HounsfieldModel
from tests import dicom_factory as factory
from tests.http_helpers import expected_hashes_line, parse_answer, post_like_original_tool, request_part_contents
from tests.services import ROOT, start_bridge, start_worker, wait_for_health
from tests.test_dicom_export import (
    COMPREHENSIVE_3D_SR,
    assert_valid,
    check_segmentations,
    read,
    referenced_uids,
)
from tests.test_dicom_export_studies import as_study, write_export_study
from tests.test_hounsfield import EXPECTED_BOXES, phantom, write_phantom

KNOWN = '"arterys", "dicom"'


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The mock model's worker (default formats; studyPath under `root`), the Hounsfield model's, and the mock
    model's again started with --output-formats dicom, behind one bridge (routes /hounsfield, /dicom)."""
    tmp = tmp_path_factory.mktemp("dicom-e2e")
    root = tmp / "root"
    export_study, _ = write_export_study(root / "export")
    phantom_paths = write_phantom(root / "phantom")
    # tests/dicom_factory.py's multi-frame CT has no per-frame positions: no Segmentation can be placed on it
    flat = factory.write_study(root / "flat", [factory.SeriesSpec("mf", rows=8, cols=9, count=1, frames=4)])
    workers = [start_worker(tmp, "mock_model", "--study-root", str(root), wait_serving=False),
               start_worker(tmp, "example_models.hounsfield", wait_serving=False),
               start_worker(tmp, "mock_model", "--output-formats", "dicom", wait_serving=False)]
    bridge = None
    try:
        for worker in workers:  # started together, waited for together: their model loads overlap
            wait_for_health(worker)
        mock, hounsfield, dicom_default = workers
        bridge = start_bridge(tmp, mock.address, "--route", f"/hounsfield={hounsfield.address}",
                              "--route", f"/dicom={dicom_default.address}")
        yield SimpleNamespace(url=f"http://{bridge.address}", study=export_study,
                              paths=[i.path for i in export_study.instances], phantom=phantom_paths,
                              flat=[i.path for i in flat.instances])
    finally:
        for service in ([bridge] if bridge else []) + workers:
            service.stop()


def post(url: str, paths, command: str, formats=None, route: str = "/") -> requests.Response:
    request = {"inference_command": command}
    if formats is not None:
        request["output_formats"] = formats
    return post_like_original_tool(url + route, request, paths, timeout=60)


def by_modality(answer, modality: str) -> list[tuple[dict, pydicom.Dataset, bytes, str]]:
    """(parts entry, dataset, bytes, Content-Type) of every DICOM output of that modality."""
    return [(p, read(b), b, t) for p, b, t in zip(answer.json["parts"], answer.binaries, answer.content_types,
                                                  strict=True)
            if p.get("dicom_output", {}).get("modality") == modality]


def masks_of(answer) -> list[tuple[dict, np.ndarray]]:
    out = []
    for part, binary in zip(answer.json["parts"], answer.binaries, strict=True):
        if "binary_data_shape" in part:
            shape = part["binary_data_shape"]
            out.append((part, np.frombuffer(binary, np.uint8).reshape(-1, shape["height"], shape["width"])))
    return out


def check_references(answer, study) -> None:
    """Every UID a DICOM output names is an instance or series sent, or one of the answer's own objects."""
    objects = [read(b) for p, b in zip(answer.json["parts"], answer.binaries, strict=True) if "dicom_output" in p]
    inputs, input_series = {i.sop_instance_uid for i in study.instances}, {i.series_instance_uid for i in
                                                                           study.instances}
    produced, produced_series = {ds.SOPInstanceUID for ds in objects}, {ds.SeriesInstanceUID for ds in objects}
    assert objects
    for ds in objects:
        instances, series = referenced_uids(ds)
        assert instances and instances <= inputs | produced, instances - inputs - produced
        assert series <= input_series | produced_series, series - input_series - produced_series
        assert ds.StudyInstanceUID == study.instances[0].header.StudyInstanceUID


def check_segmentations_equal_masks(study, masks, segs, folder: Path, in_order: bool = True,
                                    model: tuple[str, str] = ("mock_model", "1.0")) -> None:
    """The SEGs of an answer against its masks (tests/test_dicom_export.py's check: one SEG per series and
    time point, each frame equal to what the masks put on its source frame), each sent as application/dicom
    without a binary_data_shape; in the series' order when `in_order` (a studyPath study may list its series
    in another order)."""
    for entry, _, _, content_type in segs:
        assert content_type == "application/dicom" and "binary_data_shape" not in entry
    check_segmentations(study, [(part, mask.tobytes()) for part, mask in masks],
                        [(entry, ds, data) for entry, ds, data, _ in segs], folder, model=model)
    if in_order:
        order = [s.uid for s in study.series]
        sources = [order.index(entry["dicom_output"]["source"]["SeriesInstanceUID"]) for entry, *_ in segs]
        assert sources == sorted(sources)


@pytest.mark.parametrize("command", ["get-label-mask", "get-probability-mask", "get-probability-mask-2d"])
def test_arterys_and_dicom_gives_the_masks_then_segmentations_equal_to_them(stack, command, tmp_path):
    answer = parse_answer(post(stack.url, stack.paths, command, ["arterys", "dicom"]))
    masks = masks_of(answer)
    segs = by_modality(answer, "SEG")
    (sr_entry, sr, sr_data, _), = by_modality(answer, "SR")
    # masks first, as the model returned them, then one SEG per mask (per time point), then the SR
    assert len(answer.json["parts"]) == len(masks) + len(segs) + 1 and answer.json["parts"][-1] is sr_entry
    assert all("dicom_output" not in p for p, _ in masks)
    check_segmentations_equal_masks(stack.study, masks, segs, tmp_path)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr_entry["dicom_output"]["template"] == "TID 1500"
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups()
    assert len(groups) == sum(len(ds.SegmentSequence) for _, ds, _, _ in segs)
    assert_valid(sr_data, tmp_path, "sr")
    check_references(answer, stack.study)
    # the bridge hashed the answer it sent, DICOM parts included
    assert answer.hashes == expected_hashes_line(
        request_part_contents({"inference_command": command, "output_formats": ["arterys", "dicom"]}, stack.paths),
        answer)


def test_dicom_only_leaves_the_masks_out_and_keeps_their_conformance(stack, tmp_path):
    arterys = parse_answer(post(stack.url, stack.paths, "get-boolean-mask", ["arterys"]))
    answer = parse_answer(post(stack.url, stack.paths, "get-boolean-mask", ["dicom"]))
    assert {p["binary_type"] for p in answer.json["parts"]} == {"dicom"}
    assert set(answer.content_types) == {"application/dicom"}
    segs = by_modality(answer, "SEG")
    # the mock model's masks follow the study, so the Arterys answer holds the masks these SEGs were made from
    check_segmentations_equal_masks(stack.study, masks_of(arterys), segs, tmp_path)
    conformance = {p["SeriesInstanceUID"]: p["dicomConformance"] for p, _ in masks_of(arterys)}
    assert [e["dicomConformance"] for e, *_ in segs] == [
        conformance[e["dicom_output"]["source"]["SeriesInstanceUID"]] for e, *_ in segs]
    check_references(answer, stack.study)


def test_without_output_formats_the_answer_is_the_arterys_one(stack):
    default = parse_answer(post(stack.url, stack.paths, "get-heatmap"))
    asked = parse_answer(post(stack.url, stack.paths, "get-heatmap", ["arterys"]))
    assert default.json == asked.json and default.binaries == asked.binaries
    assert default.json["parts"] and all("dicom_output" not in p for p in default.json["parts"])


def test_a_worker_started_with_output_formats_dicom_answers_in_dicom_unless_asked_otherwise(stack):
    default = parse_answer(post(stack.url, stack.paths, "get-bounding-box-2d", route="/dicom"))
    (entry, sr, _, _), = by_modality(default, "SR")  # boxes only: no SEG, one SR
    assert default.json["parts"] == [entry]
    regions = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in regions] == [b["label"] for b in default.json["bounding_boxes_2d"]]
    asked = parse_answer(post(stack.url, stack.paths, "get-boolean-mask", ["arterys"], route="/dicom"))
    assert asked.json["parts"] and all("dicom_output" not in p for p in asked.json["parts"])


@pytest.mark.parametrize("formats, message", [
    (["arterys", "png"], f"names an unknown format 'png'; known: {KNOWN}"),
    ("dicom", f"must be a non-empty list of formats, e.g. [\"arterys\", \"dicom\"]; got 'dicom' (known: {KNOWN})"),
])
def test_an_unknown_format_is_a_400_naming_the_known_ones(stack, formats, message):
    response = post(stack.url, stack.paths, "get-boolean-mask", formats)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["message"] == f'the request\'s "output_formats" {message}'


def test_hounsfield_model_in_dicom_gives_bone_and_air_segments_and_its_boxes(stack, tmp_path):
    answer = parse_answer(post(stack.url, stack.phantom, "segment-hounsfield", ["dicom"], route="/hounsfield"))
    (entry, seg, seg_data, _), = by_modality(answer, "SEG")
    (_, sr, sr_data, _), (_, findings, findings_data, _) = by_modality(answer, "SR")
    assert entry["dicom_output"]["segments"] == {"1": "bone", "2": "air"}
    assert seg.ManufacturerModelName == HounsfieldModel.name
    # the phantom's slices by position (slice_N.dcm is slice N along the normal), labels as phantom() says
    headers = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in stack.phantom),
                     key=lambda ds: int(ds.InstanceNumber))
    pixels = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in headers], combine_segments=True, relabel=False)
    np.testing.assert_array_equal(pixels, phantom()[1])
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    regions = report.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in regions] == [label for label, *_ in EXPECTED_BOXES]
    for group, (_, z, (left, top), (right, bottom), _) in zip(regions, EXPECTED_BOXES, strict=True):
        np.testing.assert_allclose(group.roi.value, [[left, top], [right, top], [right, bottom], [left, bottom],
                                                     [left, top]])
        assert group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
            headers[z].SOPInstanceUID
    volumes = {g.tracking_identifier: (m.name.meaning, m.value, m.unit.value)
               for g in hd.sr.Comprehensive3DSR.from_dataset(findings).content.get_volumetric_roi_measurement_groups()
               for m in g.get_measurements()}
    series_json = next(iter(answer.json["series_ml_json"].values()))
    assert volumes["bone"] == ("Volume", pytest.approx(series_json["bone_volume_ml"]), "ml")
    check_references(answer, as_study(stack.phantom))
    assert_valid(seg_data, tmp_path, "hounsfield-seg")
    assert_valid(sr_data, tmp_path, "hounsfield-sr")
    assert_valid(findings_data, tmp_path, "hounsfield-findings")


def test_hounsfield_model_in_arterys_and_dicom_keeps_its_label_mask_and_the_segmentation_equals_it(stack, tmp_path):
    answer = parse_answer(post(stack.url, stack.phantom, "segment-hounsfield", ["arterys", "dicom"],
                               route="/hounsfield"))
    assert [p["binary_type"] for p in answer.json["parts"]] == ["numeric_label_mask", "dicom", "dicom", "dicom"]
    check_segmentations_equal_masks(as_study(stack.phantom), masks_of(answer), by_modality(answer, "SEG"), tmp_path,
                                    model=(HounsfieldModel.name, HounsfieldModel.version))


def test_study_path_requests_get_dicom_outputs_too(stack, tmp_path):
    body = {"studyPath": "export", "inference_command": "get-probability-mask", "output_formats": ["dicom"]}
    response = requests.post(stack.url + "/", data=json.dumps(body), headers={"Content-Type": "application/json"},
                             timeout=60)
    answer = parse_answer(response)
    arterys = parse_answer(post(stack.url, stack.paths, "get-probability-mask", ["arterys"]))
    check_segmentations_equal_masks(stack.study, masks_of(arterys), by_modality(answer, "SEG"), tmp_path,
                                    in_order=False)
    check_references(answer, stack.study)


def test_a_study_whose_frames_cannot_be_placed_is_a_422_for_dicom_only(stack):
    assert post(stack.url, stack.flat, "get-boolean-mask", ["arterys"]).status_code == 200
    response = post(stack.url, stack.flat, "get-boolean-mask", ["arterys", "dicom"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unprocessable_study"
    assert "parts[0]" in error["message"] and "no functional groups" in error["message"]


@pytest.mark.parametrize("flag, env", [(["--output-formats", "arterys,png"], {}),
                                       ([], {"WORKER_OUTPUT_FORMATS": "arterys,png"})])
def test_a_worker_refuses_an_unknown_default_format_at_start_in_one_line(flag, env):
    result = subprocess.run([sys.executable, "-m", "worker", "--model", "mock_model", "--listen", "127.0.0.1:0",
                             *flag], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"python -m worker: error: --output-formats names an unknown format 'png'; "
                             f"known: {KNOWN}\n")
