"""DICOM outputs checked as a PACS would: read back with pydicom and highdicom, compared with the mask the
model returned frame by frame, every referenced UID found in the input, and DICOM's validator (dciodvfy,
Debian's dicom3tools; .ci/run installs it) reporting no error and no warning outside ACCEPTED_WARNINGS.

The input study (tests/test_dicom_export_studies.py) has an axial CT, a sagittal MR, a tilted CT stored
RLE-compressed, an enhanced multi-frame CT and a 4D MR; the results come from the mock model, so every
output type of the protocol passes through the export.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from mock_model.model import MockModel
from tests import dicom_factory as factory
from tests import system_tools
from tests.test_dicom_export_studies import as_study, write_export_study
from worker.api import UnsupportedStudy
from worker.dicom_export import DicomExportError, export_dicom
from worker.results import checked, from_legacy, from_result
from worker.study import Study

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
MASK_COMMANDS = ("get-probability-mask", "get-boolean-mask", "get-heatmap", "get-label-mask",
                 "get-probability-mask-2d")

# dciodvfy warnings our objects may carry, and why each is acceptable.
ACCEPTED_WARNINGS = {
    # The test inputs have no StudyID/StudyTime; a SEG or SR must repeat the study's values (here empty,
    # as Type 2 allows). A DICOMDIR would want them; a PACS does not.
    r"Missing attribute or value that would be needed to build DICOMDIR - Study (ID|Time)": "inputs lack them",
    # Free-text labels become codes of our private scheme 99ARTBR (declared in the Coding Scheme
    # Identification Sequence); dciodvfy knows only the standard designators.
    r"Unrecognized defined term <99ARTBR> for value 1 of attribute <Coding Scheme Designator>": "private scheme",
}


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy reports for a file. Fails (not skips) when dicom3tools is missing."""
    program = system_tools.require("dciodvfy")[0]
    result = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


def dciodvfy_errors(path: Path) -> list[str]:
    return dciodvfy(path)[0]


def assert_valid(data: bytes, folder: Path, name: str) -> None:
    path = folder / f"{name}.dcm"
    path.write_bytes(data)
    errors, warnings = dciodvfy(path)
    unexpected = [w for w in warnings if not any(re.search(p, w) for p in ACCEPTED_WARNINGS)]
    assert errors == [], f"{name}: dciodvfy errors {errors}"
    assert unexpected == [], f"{name}: dciodvfy warnings nobody accepted {unexpected}"


def read(data) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(bytes(data)))


def referenced_uids(dataset: pydicom.Dataset) -> tuple[set[str], set[str]]:
    """Every Referenced SOP Instance UID and every series UID named inside a sequence, at any depth."""
    instances, series = set(), set()

    def walk(ds: pydicom.Dataset) -> None:
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    if "SeriesInstanceUID" in item:
                        series.add(str(item.SeriesInstanceUID))
                    if item.get("ValueType") == "UIDREF" and item.ConceptNameCodeSequence[0].CodeValue == "121232":
                        series.add(str(item.UID))  # SR: Source Series for Segmentation
                    if "ReferencedSOPInstanceUID" in item:
                        instances.add(str(item.ReferencedSOPInstanceUID))
                    walk(item)

    walk(dataset)
    return instances, series


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    return write_export_study(tmp_path_factory.mktemp("export-study"))[0]


_RUNS: dict = {}


def run(study: Study, command: str, keep_arterys: bool = False):
    """The mock model's checked answer to `command`, and that answer with DICOM outputs (made once per
    study, command and keep_arterys: tests only read them)."""
    key = (id(study), command, keep_arterys)
    if key not in _RUNS:
        _RUNS[key] = _run(study, command, keep_arterys)
    return _RUNS[key]


def _run(study: Study, command: str, keep_arterys: bool):
    study.command = command
    wire = checked(*from_result(MockModel().infer(study)), study.index())
    out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=keep_arterys,
                                 model_name="mock_model", model_version="1.0")
    assert checked(out, binaries, study.index())  # the answer with DICOM parts still obeys the protocol
    return wire, out, binaries


def dicom_parts(out: dict, binaries: list, modality: str) -> list[tuple[dict, pydicom.Dataset, bytes]]:
    return [(p, read(b), bytes(b)) for p, b in zip(out["parts"], binaries, strict=True)
            if p.get("dicom_output", {}).get("modality") == modality]


# ---------------------------------------------------------------------------------------- masks -> SEG


def source_planes(study: Study, part: dict) -> list[list[tuple[str, int | None]]]:
    """For each Segmentation expected from a mask part: (SOP Instance UID, frame or None) of every plane.

    Worked out from the Study's public order, not from the exporter's code: 3D masks cover the series'
    instances in order (frames in order), one Segmentation per time point; a 2D mask covers its image.
    """
    if "dicom_image" in part:
        image = part["dicom_image"]
        instance = next(i for i in study.instances if i.sop_instance_uid == image["SOPInstanceUID"])
        return [[(instance.sop_instance_uid, image.get("frame_number") or (1 if instance.frames > 1 else None))]]
    series = study.series_by_uid(part["SeriesInstanceUID"])
    planes = [(i.sop_instance_uid, f + 1 if "NumberOfFrames" in i.header else None)
              for i in series.instances for f in range(i.frames)]
    depth = part["binary_data_shape"]["depth"]
    return [planes[t * depth:(t + 1) * depth] for t in range(part["binary_data_shape"]["timepoints"])]


def expected_frame(part: dict, plane: np.ndarray, segment: int) -> np.ndarray:
    """What a SEG frame of `segment` must hold for this mask plane."""
    if part["binary_type"] == "numeric_label_mask":
        value = sorted(int(v) for v in part["label_map"])[segment - 1]
        return (plane == value).astype(np.uint8)
    if part["binary_type"] == "boolean_mask":
        return (plane != 0).astype(np.uint8)
    return plane  # fractional: the stored 0..255 are the mask's bytes


def position_of(study: Study, uid: str, frame: int | None) -> list[float]:
    header = next(i for i in study.instances if i.sop_instance_uid == uid).header
    if frame is None:
        return [float(v) for v in header.ImagePositionPatient]
    item = header.PerFrameFunctionalGroupsSequence[frame - 1].PlanePositionSequence[0]
    return [float(v) for v in item.ImagePositionPatient]


def check_segmentation(study: Study, part: dict, mask: np.ndarray, ds: pydicom.Dataset,
                       planes: list[tuple[str, int | None]], model: tuple[str, str] = ("mock_model", "1.0")) -> None:
    """One SEG against the mask planes it covers: type, segments, geometry, pixels frame by frame."""
    fractional = part["binary_type"] in ("probability_mask", "heatmap")
    assert ds.SOPClassUID == SEGMENTATION_STORAGE and ds.Modality == "SEG"
    assert ds.SegmentationType == ("FRACTIONAL" if fractional else "BINARY")
    if fractional:
        assert (ds.SegmentationFractionalType, ds.MaximumFractionalValue) == ("PROBABILITY", 255)
    names = [s.SegmentLabel for s in ds.SegmentSequence]
    if part["binary_type"] == "numeric_label_mask":
        assert names == [part["label_map"][k][:64] for k in sorted(part["label_map"], key=int)]  # LO: 64 at most
    else:
        assert names == [part["label"][:64]]
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == model
    assert ds.ManufacturerModelName == model[0]

    source = next(i for i in study.instances if i.sop_instance_uid == planes[0][0]).header
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID

    expected = {ref: mask[k] for k, ref in enumerate(planes)}
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    seen = set()
    for index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        key = (reference.ReferencedSOPInstanceUID, reference.get("ReferencedFrameNumber"))
        # one segment: highdicom names it once, in the shared functional groups
        identification = frame.get("SegmentIdentificationSequence") or \
            ds.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence
        segment = identification[0].ReferencedSegmentNumber
        assert key in expected, f"SEG frame {index + 1} derives from {key}, which this mask does not cover"
        np.testing.assert_array_equal(pixels[index], expected_frame(part, expected[key], segment),
                                      err_msg=f"SEG frame {index + 1} (source {key}, segment {segment})")
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, position_of(study, *key), atol=1e-4)
        seen.add((key, segment))
    for key, plane in expected.items():  # frames with nothing in them may be left out, no others
        for segment in range(1, len(names) + 1):
            if (key, segment) not in seen:
                assert not expected_frame(part, plane, segment).any(), f"{key} segment {segment} is missing"

    # highdicom's own reader, by source image, agrees.
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    if planes[0][1] is None:
        array = seg.get_pixels_by_source_instance([uid for uid, _ in planes], rescale_fractional=False)
    else:
        array = seg.get_pixels_by_source_frame(planes[0][0], [f for _, f in planes], rescale_fractional=False)
    for k, plane in enumerate(mask):
        for segment in range(1, len(names) + 1):
            np.testing.assert_array_equal(array[k, :, :, segment - 1], expected_frame(part, plane, segment))


@pytest.mark.parametrize("command", MASK_COMMANDS)
def test_every_mask_becomes_segmentations_equal_to_it_frame_by_frame(study, command, tmp_path):
    wire, out, binaries = run(study, command)
    masks = [(p, b) for p, b in zip(wire.json["parts"], wire.binaries, strict=True) if "binary_data_shape" in p]
    segs = dicom_parts(out, binaries, "SEG")
    expected_count = sum(len(source_planes(study, p)) for p, _ in masks)
    assert len(segs) == expected_count and expected_count >= len(masks) > 0
    position = 0
    for part, binary in masks:
        shape = part["binary_data_shape"]
        mask = np.frombuffer(binary, np.uint8).reshape(-1, shape["height"], shape["width"])
        for timepoint, planes in enumerate(source_planes(study, part)):
            entry, ds, data = segs[position]
            check_segmentation(study, part, mask[timepoint * len(planes):(timepoint + 1) * len(planes)], ds, planes)
            source_series = entry["dicom_output"]["source"]["SeriesInstanceUID"]
            assert source_series == ds.ReferencedSeriesSequence[0].SeriesInstanceUID
            assert_valid(data, tmp_path, f"seg{position}")
            position += 1


def test_4d_mask_gives_one_segmentation_per_time_point(study):
    _, out, binaries = run(study, "get-boolean-mask")
    series = next(s for s in study.series if s.timepoints > 1)
    segs = [(p, ds) for p, ds, _ in dicom_parts(out, binaries, "SEG")
            if p["dicom_output"]["source"]["SeriesInstanceUID"] == series.uid]
    assert [p["dicom_output"]["source"]["timepoint"] for p, _ in segs] == [1, 2, 3]
    for t, (_, ds) in enumerate(segs):
        sources = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                   for f in ds.PerFrameFunctionalGroupsSequence}
        members = series.instances[t * series.depth:(t + 1) * series.depth]
        assert sources and sources <= {i.sop_instance_uid for i in members}
        assert {i.header.TemporalPositionIdentifier for i in members} == {t + 1}


def test_every_uid_the_outputs_reference_is_in_the_input_or_the_outputs(study):
    inputs = {i.sop_instance_uid for i in study.instances}
    input_series = {i.series_instance_uid for i in study.instances}
    for command in (*MASK_COMMANDS, "get-bounding-box-2d", "get-linear-measurements", "get-classification"):
        _, out, binaries = run(study, command)
        objects = [read(b) for p, b in zip(out["parts"], binaries, strict=True) if "dicom_output" in p]
        produced = {str(ds.SOPInstanceUID) for ds in objects}
        produced_series = {str(ds.SeriesInstanceUID) for ds in objects}
        for ds in objects:
            instances, series = referenced_uids(ds)
            assert instances and instances <= inputs | produced, (command, instances - inputs - produced)
            assert series <= input_series | produced_series, (command, series - input_series - produced_series)
            assert ds.StudyInstanceUID == study.instances[0].header.StudyInstanceUID


def test_fractional_segmentation_keeps_every_byte_value(tmp_path):
    """All 256 probabilities survive the float conversion highdicom needs, exactly."""
    record = factory.write_study(tmp_path, [factory.SeriesSpec("ct", rows=16, cols=16, count=2)])
    study = as_study([i.path for i in record.instances])
    series = study.series[0]
    mask = np.arange(512, dtype=np.uint16).reshape(2, 16, 16).astype(np.uint8)
    part = {"label": "p", "binary_type": "probability_mask", "SeriesInstanceUID": series.uid,
            "binary_data_shape": {"timepoints": 1, "depth": 2, "height": 16, "width": 16}}
    result = {"protocol_version": "1.0", "parts": [part]}
    out, binaries = export_dicom(result, [memoryview(mask.tobytes())], study, keep_arterys=False)
    ds = read(binaries[0])
    check_segmentation(study, part, mask, ds, [(i.sop_instance_uid, None) for i in series.instances],
                       model=("unnamed model", "unknown"))


# ------------------------------------------------------------------------------------------- the SR


def sr_of(out: dict, binaries: list) -> tuple[pydicom.Dataset, hd.sr.Comprehensive3DSR]:
    (entry, ds, data), = dicom_parts(out, binaries, "SR")
    assert entry["label"] == "measurement report" and entry["binary_type"] == "dicom"
    assert ds.SOPClassUID == COMPREHENSIVE_3D_SR
    return ds, hd.sr.Comprehensive3DSR.from_dataset(ds)


def test_sr_references_each_segment_of_each_segmentation(study, tmp_path):
    _, out, binaries = run(study, "get-label-mask")
    segs = {str(ds.SOPInstanceUID): ds for _, ds, _ in dicom_parts(out, binaries, "SEG")}
    ds, sr = sr_of(out, binaries)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    referenced = set()
    for group in groups:
        segment = group.referenced_segment
        seg = segs[segment.referenced_sop_instance_uid]
        number = segment.referenced_segment_numbers[0] if hasattr(segment, "referenced_segment_numbers") \
            else segment.ReferencedSOPSequence[0].ReferencedSegmentNumber
        assert group.tracking_identifier == seg.SegmentSequence[number - 1].SegmentLabel
        referenced.add((segment.referenced_sop_instance_uid, number))
    assert referenced == {(uid, n) for uid, seg in segs.items() for n in (1, 2)}
    evidence = {i.ReferencedSOPInstanceUID for s in ds.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert set(segs) <= evidence
    assert_valid(bytes(binaries[-1]), tmp_path, "sr-labels")


def test_bounding_boxes_become_planar_regions_on_their_image(study, tmp_path):
    wire, out, binaries = run(study, "get-bounding-box-2d")
    ds, sr = sr_of(out, binaries)
    groups = sr.content.get_planar_roi_measurement_groups()
    boxes = wire.json["bounding_boxes_2d"]
    assert len(groups) == len(boxes) == len(study.series)
    for box, group in zip(boxes, groups, strict=True):
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        (left, top), (right, bottom) = box["top_left"], box["bottom_right"]
        np.testing.assert_allclose(region.value, [[left, top], [right, top], [right, bottom], [left, bottom],
                                                  [left, top]])
        image = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert image.ReferencedSOPInstanceUID == box["SOPInstanceUID"]
        if "frame_number" in box:
            assert image.ReferencedFrameNumber == box["frame_number"]
        assert group.tracking_identifier == box["label"]
    assert_valid(bytes(binaries[-1]), tmp_path, "sr-boxes")


def test_linear_measurements_are_lengths_in_mm(study, tmp_path):
    wire, out, binaries = run(study, "get-linear-measurements")
    _, sr = sr_of(out, binaries)
    groups = sr.content.get_image_measurement_groups()
    items = wire.json["linear_measurements_2d"]
    assert len(groups) == len(items) > len(study.series)
    by_uid = {i.sop_instance_uid: i for i in study.instances}
    for item, group in zip(items, groups, strict=True):
        (length,) = group.get_measurements(name=codes.SCT.Length)
        instance = by_uid[item["SOPInstanceUID"]]
        (dx, dy) = np.subtract(item["end"], item["start"])
        if item["coordinates_type"] == "pixel":
            # factory images: PixelSpacing 0.8 mm between rows, 0.7 mm between columns
            spacing = (0.8, 0.7)
            assert length.value == pytest.approx(float(np.hypot(dy * spacing[0], dx * spacing[1])))
            (coordinates,) = [c for c in length[0].ContentSequence if c.ValueType == "SCOORD"]
            np.testing.assert_allclose(np.reshape(coordinates.GraphicData, (-1, 2)), [item["start"], item["end"]])
        else:
            header = instance.header
            if "ImageOrientationPatient" not in header:  # the enhanced CT: geometry in functional groups
                header = header.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
            normal = np.cross(np.array(header.ImageOrientationPatient[:3], float),
                              np.array(header.ImageOrientationPatient[3:], float))
            scoord3d = [c for c in length[0].ContentSequence if c.ValueType == "SCOORD3D"]
            if abs(normal[2]) < 1e-3:  # sagittal: x, y do not place a point on the plane
                assert scoord3d == [] and length.value == pytest.approx(float(np.hypot(dx, dy)))
            else:
                points = np.reshape(scoord3d[0].GraphicData, (-1, 3))
                np.testing.assert_allclose(points[:, :2], [item["start"], item["end"]], atol=1e-4)
                origin = np.array(position_of(study, item["SOPInstanceUID"], item.get("frame_number")))
                np.testing.assert_allclose((points - origin) @ normal, 0, atol=1e-3)  # on the image plane
                assert length.value == pytest.approx(float(np.linalg.norm(points[1] - points[0])), rel=1e-6)
        assert str(length.unit.value) == "mm"
    assert_valid(bytes(binaries[-1]), tmp_path, "sr-lengths")


def test_classification_values_become_coded_evaluations(study, tmp_path):
    wire, out, binaries = run(study, "get-classification")
    assert len(out["parts"]) == 1
    _, sr = sr_of(out, binaries)
    groups = sr.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["study classification"] + [
        f"series classification {uid}" for uid in wire.json["series_ml_json"]]
    study_group = groups[0]
    evaluations = {e.name.value: e.value for e in study_group.get_qualitative_evaluations()}
    label = wire.json["study_ml_json"]["label"]
    standard = {"normal": ("17621005", "SCT"), "abnormal": ("263654008", "SCT")}[label]
    assert (evaluations["label"].value, evaluations["label"].scheme_designator) == standard
    assert (evaluations["command"].value, evaluations["command"].scheme_designator) == ("get-classification",
                                                                                         "99ARTBR")
    numbers = {m.name.value: m.value for m in study_group.get_measurements()}
    assert numbers == {"probability": 0.87, "series_count": len(study.series),
                       "instance_count": len(study.instances)}  # "findings" (a list) is not carried
    for group, (uid, values) in zip(groups[1:], wire.json["series_ml_json"].items(), strict=True):
        assert {m.name.value: m.value for m in group.get_measurements()} == {"score": values["score"],
                                                                            "slices": values["slices"]}
        sources = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in group[0].ContentSequence
                   if i.ValueType == "IMAGE"}
        assert sources == {i.sop_instance_uid for i in study.series_by_uid(uid).instances}
    assert_valid(bytes(binaries[-1]), tmp_path, "sr-classification")


def test_device_and_algorithm_are_named(study):
    _, out, binaries = run(study, "get-bounding-box-2d")
    ds, sr = sr_of(out, binaries)
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("arterys-grpc-bridge", "mock_model")
    assert ds.SoftwareVersions[0] == "1.0"
    device = sr.content.get_observer_contexts()[0]
    assert device.observer_identifying_attributes.name == "mock_model"
    group = sr.content.get_planar_roi_measurement_groups()[0]
    algorithm = [i.TextValue for i in group[0].ContentSequence
                 if i.ConceptNameCodeSequence[0].CodeMeaning in ("Algorithm Name", "Algorithm Version")]
    assert algorithm == ["mock_model", "1.0"]


# ----------------------------------------------------------------------------------- parts and options


def test_keep_arterys_keeps_the_masks_and_the_other_keys(study):
    wire, out, binaries = run(study, "get-heatmap", keep_arterys=True)
    count = len(wire.json["parts"])
    assert out["parts"][:count] == wire.json["parts"]
    assert all(a is b for a, b in zip(binaries[:count], wire.binaries, strict=False))
    assert out["palettes"] == wire.json["palettes"]
    assert {p["binary_type"] for p in out["parts"][count:]} == {"dicom"}
    assert all("binary_data_shape" not in p for p in out["parts"][count:])


def test_dicom_only_drops_the_masks_but_keeps_other_parts_and_keys(study):
    study.command = "get-structured-report"
    wire = checked(*from_result(MockModel().infer(study)), study.index())
    box = {"label": "lesion", "SOPInstanceUID": study.instances[0].sop_instance_uid,
           "top_left": [1, 2], "bottom_right": [5, 6]}
    result = {**wire.json, "bounding_boxes_2d": [box], "custom": {"a": 1}}
    before = {**result, "parts": list(result["parts"])}
    out, binaries = export_dicom(result, wire.binaries, study, keep_arterys=False)
    assert result == before  # the input is not modified
    assert out["parts"][0] == wire.json["parts"][0] and bytes(binaries[0]) == bytes(wire.binaries[0])
    assert out["custom"] == {"a": 1} and out["bounding_boxes_2d"] == result["bounding_boxes_2d"]
    assert [p["dicom_output"]["modality"] for p in out["parts"][1:]] == ["SR"]

    _, masks_only, _ = run(study, "get-boolean-mask", keep_arterys=False)
    assert {p["binary_type"] for p in masks_only["parts"]} == {"dicom"}


def test_a_legacy_handler_answer_is_exported_too(tmp_path):
    """Raw JSON + a numpy mask of 0/255 (as old handlers wrote), with no typed Result behind it."""
    record = factory.write_study(tmp_path, [factory.SeriesSpec("ct", rows=12, cols=10, count=3)])
    study = as_study([i.path for i in record.instances])
    series = study.series[0]
    mask = np.zeros((3, 12, 10), np.uint8)
    mask[1, 2:5, 3:7] = 255
    answer = {"parts": [{"label": "legacy", "binary_type": "boolean_mask", "SeriesInstanceUID": series.uid,
                         "binary_data_shape": {"timepoints": 1, "depth": 3, "width": 10, "height": 12}}]}
    wire = checked(*from_legacy(answer, [mask]), study.index())
    out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=False, model_name="legacy")
    (entry, ds, data), = dicom_parts(out, binaries, "SEG")
    check_segmentation(study, wire.json["parts"][0], mask, ds, [(i.sop_instance_uid, None) for i in series.instances],
                       model=("legacy", "unknown"))
    assert int(ds.NumberOfFrames) == 1  # the two empty planes are left out
    assert_valid(data, tmp_path, "legacy")


def test_nothing_to_report_gives_no_sr(study):
    result = {"protocol_version": "1.0", "parts": [], "study_ml_json": {"notes": ["a list is not a finding"]}}
    out, binaries = export_dicom(result, [], study, keep_arterys=True)
    assert out == result and binaries == []


def test_frames_without_positions_are_refused_with_the_reason(tmp_path):
    """tests/dicom_factory.py's multi-frame CT has no functional groups: its frames cannot be placed."""
    record = factory.write_study(tmp_path, [factory.SeriesSpec("mf", rows=8, cols=9, count=1, frames=4)])
    study = as_study([i.path for i in record.instances])
    part = {"label": "m", "binary_type": "boolean_mask", "SeriesInstanceUID": study.series[0].uid,
            "binary_data_shape": {"timepoints": 1, "depth": 4, "width": 9, "height": 8}}
    with pytest.raises(DicomExportError, match=r"parts\[0\] \('m'\).*no functional groups") as caught:
        export_dicom({"protocol_version": "1.0", "parts": [part]}, [bytes(4 * 8 * 9)], study, keep_arterys=True)
    assert isinstance(caught.value, UnsupportedStudy)  # HTTP 422 where the worker maps UnsupportedStudy


def test_segments_and_private_codes_follow_the_labels(tmp_path):
    record = factory.write_study(tmp_path, [factory.SeriesSpec("ct", rows=8, cols=8, count=2)])
    study = as_study([i.path for i in record.instances])
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[0, :2] = 7
    mask[1, 3:] = 3
    part = {"label": "organs", "binary_type": "numeric_label_mask", "SeriesInstanceUID": study.series[0].uid,
            "label_map": {"7": "Bone", "3": "a very long label " * 5},
            "binary_data_shape": {"timepoints": 1, "depth": 2, "width": 8, "height": 8}}
    out, binaries = export_dicom({"protocol_version": "1.0", "parts": [part]}, [mask.tobytes()], study,
                                 keep_arterys=False)
    ds = read(binaries[0])
    first, second = ds.SegmentSequence
    # label values in ascending order: 3 -> segment 1, 7 -> segment 2
    assert first.SegmentLabel == ("a very long label " * 5)[:64]
    assert first.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "99ARTBR"
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == "272673000"  # SCT Bone
    assert out["parts"][0]["dicom_output"]["segments"] == {"1": ("a very long label " * 5)[:64], "2": "Bone"}
    check_segmentation(study, part, mask, ds, [(i.sop_instance_uid, None) for i in study.series[0].instances],
                       model=("unnamed model", "unknown"))
    assert_valid(bytes(binaries[0]), tmp_path, "labels")



def test_an_image_without_frame_of_reference_gets_a_segmentation_but_a_series_does_not(tmp_path):
    """Computed radiographs (pydicom's bundled files) have no frame of reference: a 2D mask can still be
    tied to its image; a 3D mask over several such images cannot be placed, and says so."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033"
    study = as_study(sorted((folder / "CR1").iterdir()) + sorted((folder / "CR2").iterdir()))
    image = study.instances[0]
    assert "FrameOfReferenceUID" not in image.header
    mask = np.zeros((image.rows, image.columns), np.uint8)
    mask[3:8, 4:9] = 1
    part = {"label": "cr", "binary_type": "boolean_mask", "dicom_image": {"SOPInstanceUID": image.sop_instance_uid},
            "binary_data_shape": {"width": image.columns, "height": image.rows}}
    out, binaries = export_dicom({"protocol_version": "1.0", "parts": [part]}, [mask.tobytes()], study,
                                 keep_arterys=False)
    ds = read(binaries[0])
    np.testing.assert_array_equal(ds.pixel_array, mask)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == image.sop_instance_uid
    assert_valid(bytes(binaries[0]), tmp_path, "cr")

    paths = []  # two radiographs made one series
    for index, source in enumerate(sorted((folder / "CR2").iterdir()) + sorted((folder / "CR3").iterdir())):
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = "1.2.3.4"
        paths.append(tmp_path / f"cr{index}.dcm")
        ds.save_as(paths[-1])
    series_study = as_study(paths)
    volume = {"label": "v", "binary_type": "boolean_mask", "SeriesInstanceUID": "1.2.3.4",
              "binary_data_shape": {"timepoints": 1, "depth": 2, "width": 16, "height": 16}}
    with pytest.raises(DicomExportError, match="no FrameOfReferenceUID"):
        export_dicom({"protocol_version": "1.0", "parts": [volume]}, [bytes(512)], series_study, keep_arterys=True)


# ------------------------------------------------------------------------------------ character sets


@pytest.mark.parametrize(("charset", "name"), [
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # the usual Japanese form: empty first value
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
    ("ISO_IR 100", "Müller^Jürgen"),
    (None, "Smith^John"),
])
def test_outputs_are_utf8_whatever_the_sources_character_set(tmp_path, charset, name):
    """Found by a PACS integrator's probe: an empty first character set value broke both outputs (422, 500),
    a model's non-ASCII label was written undeclared or as '???', and a backslash in a label failed the whole
    DICOM answer. Outputs are UTF-8 now; the patient's name reads the same as in the source, a label in any
    script survives, and a backslash becomes a slash."""
    record = factory.write_study(tmp_path / "study", [factory.SeriesSpec("ct", rows=16, cols=20, count=3)])
    for instance in record.instances:
        ds = pydicom.dcmread(instance.path)
        if charset is None:
            ds.pop("SpecificCharacterSet", None)
        else:
            ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.save_as(instance.path)
    study = as_study([i.path for i in record.instances])
    source_name = str(study.instances[0].dataset().PatientName)
    for command, label in (("get-label-mask", "Läsion 肺結節 left\\right"), ("get-bounding-box-2d", "")):
        study.command = command
        wire = checked(*from_result(MockModel().infer(study)), study.index())
        for part in wire.json["parts"]:
            part["label"] = label or part["label"]
        out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=False, model_name="mock_model")
        produced = [(p, b) for p, b in zip(out["parts"], binaries, strict=True) if "dicom_output" in p]
        assert produced, command
        for index, (part, data) in enumerate(produced):
            ds = read(data)
            assert ds.SpecificCharacterSet == "ISO_IR 192"
            assert str(ds.PatientName) == source_name
            if label and part["dicom_output"]["modality"] == "SEG":
                assert ds.ContentDescription == label.replace("\\", "/")  # LO has no backslash
            assert_valid(bytes(data), tmp_path, f"{command}-{index}")


def test_each_seg_series_has_one_frame_of_reference(study):
    """PS3.3 C.7.4.1.1.1: one Frame of Reference per series. SEGs of sources that share a frame of reference
    share a series; others get their own (one series for all had mixed them)."""
    series_of: dict[str, set] = {}
    frames_of_reference: dict[str, set] = {}
    for command in ("get-probability-mask", "get-label-mask", "get-probability-mask-2d"):
        _, out, binaries = run(study, command)
        seen = {}
        for part, ds, _ in dicom_parts(out, binaries, "SEG"):
            assert part["dicom_output"]["SeriesInstanceUID"] == ds.SeriesInstanceUID
            frame_of_reference = str(ds.get("FrameOfReferenceUID", ""))
            seen.setdefault(frame_of_reference, set()).add(ds.SeriesInstanceUID)
            frames_of_reference.setdefault(ds.SeriesInstanceUID, set()).add(frame_of_reference)
        for frame_of_reference, series in seen.items():
            assert len(series) == 1, (command, frame_of_reference, series)  # one answer: one series per FoR
            series_of.setdefault(frame_of_reference, set()).update(series)
    assert all(len(values) == 1 for values in frames_of_reference.values()), frames_of_reference
    assert len(frames_of_reference) > 1  # the study really has several frames of reference
