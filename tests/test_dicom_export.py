"""DICOM outputs checked as a PACS would: read back with pydicom and highdicom, compared with the mask the
model returned frame by frame, every referenced UID found in the input, and DICOM's validator (dciodvfy,
Debian's dicom3tools; `make test` installs it) reporting no error and no warning outside ACCEPTED_WARNINGS.

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

from arterys_http.label_colours import label_colours
from mock_model.model import MockModel
from tests import dicom_factory as factory
from tests import system_tools
from tests.test_dicom_export_studies import as_study, write_export_study
from worker.sdk.refusals import UnsupportedStudy
from worker.sdk.study import Study
from worker.serving.dicom_export import DicomExportError, export_dicom
from worker.serving.results import checked, from_legacy, from_result

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


def part_segments(part: dict, plane: np.ndarray, fractional: bool = False) -> dict[str, np.ndarray]:
    """What each segment of a mask part holds on one plane, worked out from the protocol: label values, any
    non-zero byte, or a probability (byte / 255) at the part's threshold (0.5 without one); the bytes
    themselves for a FRACTIONAL segment."""
    kind = part["binary_type"]
    if kind == "numeric_label_mask":
        return {name: (plane == int(value)).astype(np.uint8) for value, name in part["label_map"].items()}
    if kind == "boolean_mask":
        return {part["label"]: (plane != 0).astype(np.uint8)}
    if fractional:
        return {part["label"]: plane}
    threshold = part.get("probability_threshold", 0.5)
    return {part["label"]: (plane.astype(np.float64) / 255 >= threshold).astype(np.uint8)}


def position_of(study: Study, uid: str, frame: int | None) -> list[float]:
    header = next(i for i in study.instances if i.sop_instance_uid == uid).header
    if frame is None:
        return [float(v) for v in header.ImagePositionPatient]
    item = header.PerFrameFunctionalGroupsSequence[frame - 1].PlanePositionSequence[0]
    return [float(v) for v in item.ImagePositionPatient]


def expected_by_frame(study: Study, masks, fractional: bool = False) -> dict[tuple, dict[str, np.ndarray]]:
    """{(SOP Instance UID, frame or None): {label: plane}}: every mask of the answer on every source frame,
    labels found in several parts combined (a voxel is in the segment when any part puts it there)."""
    expected: dict[tuple, dict[str, np.ndarray]] = {}
    for part, binary in masks:
        shape = part["binary_data_shape"]
        mask = np.frombuffer(bytes(binary), np.uint8).reshape(-1, shape["height"], shape["width"])
        keys = [key for planes in source_planes(study, part) for key in planes]
        for key, plane in zip(keys, mask, strict=True):
            frac = fractional and part["binary_type"] in ("probability_mask", "heatmap")
            for name, value in part_segments(part, plane, frac).items():
                label = name[:64]  # Segment Label: a LO
                current = expected.setdefault(key, {}).get(label)
                expected[key][label] = value if current is None else np.maximum(current, value)
    return expected


def source_units(study: Study) -> dict[tuple, tuple]:
    """(SOP Instance UID, frame) -> the unit a Segmentation may cover: (series, time point, multi-frame
    instance or None), from the Study's public order."""
    units = {}
    for series in study.series:
        planes = [(i.sop_instance_uid, f + 1 if "NumberOfFrames" in i.header else None)
                  for i in series.instances for f in range(i.frames)]
        for index, key in enumerate(planes):
            units[key] = (series.uid, index // series.depth, key[0] if key[1] is not None else None)
    return units


def check_segmentations(study: Study, masks, segs, folder: Path | None = None, fractional: bool = False,
                        model: tuple[str, str] = ("mock_model", "1.0")) -> None:
    """Every SEG of an answer against its masks: one SEG per unit and type, each in a series of its own, each
    frame equal to what the masks put on its source frame, nothing non-empty missing, positions equal to the
    source's, colours those of arterys_http.label_colours, and highdicom's own reader agreeing."""
    expected = expected_by_frame(study, masks, fractional)
    units = source_units(study)
    colours = {name[:64]: colour for name, colour in label_colours(
        name for part, _ in masks for name in part_segments(part, np.zeros((1, 1), np.uint8))).items()}
    seen: set[tuple] = set()
    seg_units: set[tuple] = set()
    assert len({ds.SeriesInstanceUID for _, ds, _ in segs}) == len(segs)  # one SEG per series
    for index, (entry, ds, data) in enumerate(segs):
        assert ds.SOPClassUID == SEGMENTATION_STORAGE and ds.Modality == "SEG"
        assert entry["dicom_output"]["SOPInstanceUID"] == ds.SOPInstanceUID
        assert entry["dicom_output"]["segments"] == {str(s.SegmentNumber): s.SegmentLabel for s in ds.SegmentSequence}
        labels = [str(s.SegmentLabel) for s in ds.SegmentSequence]
        for segment in ds.SegmentSequence:
            algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
            assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == model
            shown = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
            assert np.abs(np.subtract(shown, colours[segment.SegmentLabel])).max() <= 1, segment.SegmentLabel
        assert ds.ManufacturerModelName == model[0] and str(ds.ContentCreatorName) == model[0] + "^"
        assert re.fullmatch(r"[A-Z0-9_ ]{1,16}", ds.ContentLabel)
        pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
        keys = set()
        for number, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
            reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
            key = (reference.ReferencedSOPInstanceUID, reference.get("ReferencedFrameNumber"))
            identification = frame.get("SegmentIdentificationSequence") or \
                ds.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence
            label = labels[identification[0].ReferencedSegmentNumber - 1]
            assert (key, label) not in seen, f"{key} {label} is in two Segmentations"
            seen.add((key, label))
            keys.add(key)
            np.testing.assert_array_equal(pixels[number], expected[key][label],
                                          err_msg=f"SEG {index} frame {number + 1} (source {key}, {label})")
            position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            np.testing.assert_allclose(position, position_of(study, *key), atol=1e-4)
        assert len({units[key] for key in keys}) == 1, "a SEG covers one series at one time point"
        unit = (units[next(iter(keys))], ds.SegmentationType)
        assert unit not in seg_units
        seg_units.add(unit)
        source = next(i for i in study.instances if i.sop_instance_uid == next(iter(keys))[0]).header
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
        assert entry["dicom_output"]["source"]["SeriesInstanceUID"] == source.SeriesInstanceUID
        # highdicom's own reader, by source image or frame, agrees.
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        ordered = sorted(keys, key=lambda k: (k[0], k[1] or 0))
        if ordered[0][1] is None:
            array = seg.get_pixels_by_source_instance([uid for uid, _ in ordered], rescale_fractional=False)
        else:
            array = seg.get_pixels_by_source_frame(ordered[0][0], [f for _, f in ordered], rescale_fractional=False)
        for k, key in enumerate(ordered):
            for number, label in enumerate(labels):
                np.testing.assert_array_equal(array[k, :, :, number], expected[key][label])
        if folder is not None:
            assert_valid(data, folder, f"seg{index}")
    missing = [(key, label) for key, planes in expected.items() for label, plane in planes.items()
               if plane.any() and (key, label) not in seen]
    assert missing == [], f"non-empty planes in no Segmentation: {missing[:3]}"


def masks_of(wire) -> list[tuple[dict, bytes]]:
    return [(p, b) for p, b in zip(wire.json["parts"], wire.binaries, strict=True) if "binary_data_shape" in p]


@pytest.mark.parametrize("command", MASK_COMMANDS)
def test_every_mask_is_in_one_segmentation_per_series_equal_to_it_frame_by_frame(study, command, tmp_path):
    wire, out, binaries = run(study, command)
    segs = dicom_parts(out, binaries, "SEG")
    assert 0 < len(segs) <= sum(series.timepoints for series in study.series) + 2  # +1 per split enhanced CT
    assert {ds.SegmentationType for _, ds, _ in segs} == {"BINARY"}  # what OHIF shows, by default
    check_segmentations(study, masks_of(wire), segs, tmp_path)


def test_fractional_segmentations_on_request_keep_every_byte_value(tmp_path):
    """All 256 probabilities survive the float conversion highdicom needs, exactly."""
    record = factory.write_study(tmp_path, [factory.SeriesSpec("ct", rows=16, cols=16, count=2)])
    study = as_study([i.path for i in record.instances], {"dicom_segmentation_type": "fractional"})
    series = study.series[0]
    mask = np.arange(512, dtype=np.uint16).reshape(2, 16, 16).astype(np.uint8)
    part = {"label": "p", "binary_type": "probability_mask", "SeriesInstanceUID": series.uid,
            "binary_data_shape": {"timepoints": 1, "depth": 2, "height": 16, "width": 16}}
    result = {"protocol_version": "1.0", "parts": [part]}
    out, binaries = export_dicom(result, [memoryview(mask.tobytes())], study, keep_arterys=False)
    segs = dicom_parts(out, binaries, "SEG")
    assert [(ds.SegmentationType, ds.SegmentationFractionalType, ds.MaximumFractionalValue)
            for _, ds, _ in segs] == [("FRACTIONAL", "PROBABILITY", 255)]
    check_segmentations(study, [(part, mask.tobytes())], segs, tmp_path, fractional=True,
                        model=("unnamed model", "unknown"))


def test_2d_masks_of_one_series_are_one_segmentation_and_labels_share_segments(tmp_path):
    """One SEG per series (OHIF shows only a SEG series' first instance): a 2D mask per slice and two labels
    in two parts become one Segmentation with one segment per label."""
    record = factory.write_study(tmp_path, [factory.SeriesSpec("ct", rows=12, cols=10, count=4)])
    study = as_study([i.path for i in record.instances])
    images = study.series[0].instances
    parts, binaries = [], []
    for index, image in enumerate(images):
        for label, value in (("lesion", 200), ("cyst", 60)):
            plane = np.zeros((12, 10), np.uint8)
            plane[index:index + 3, 2:5 + (label == "cyst")] = value
            parts.append({"label": label, "binary_type": "probability_mask", "probability_threshold": 0.3,
                          "dicom_image": {"SOPInstanceUID": image.sop_instance_uid},
                          "binary_data_shape": {"width": 10, "height": 12}})
            binaries.append(plane.tobytes())
    out, outputs = export_dicom({"protocol_version": "1.0", "parts": parts}, binaries, study, keep_arterys=False)
    segs = dicom_parts(out, outputs, "SEG")
    (entry, ds, _), = segs
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["lesion"]  # "cyst" at 60/255 < 0.3 is nowhere
    assert int(ds.NumberOfFrames) == 4
    _, sr = sr_of(out, outputs, "findings report")
    (absent,) = [g for g in sr.content.get_image_measurement_groups()
                 if any(e.value == codes.DCM.Absent for e in g.get_qualitative_evaluations())]
    assert absent.tracking_identifier == "cyst: not found" and absent.finding_type.meaning == "cyst"
    assert [g.tracking_identifier for g in sr.content.get_volumetric_roi_measurement_groups()] == ["lesion"]
    check_segmentations(study, list(zip(parts, binaries, strict=True)), segs, tmp_path,
                        model=("unnamed model", "unknown"))


# ------------------------------------------------------------------------------------------- the SR


def sr_of(out: dict, binaries: list, label: str = "measurement report") -> tuple[pydicom.Dataset,
                                                                                hd.sr.Comprehensive3DSR]:
    """The measurement report (regions OHIF draws) or the findings report (segments, classifications)."""
    (entry, ds, data), = [item for item in dicom_parts(out, binaries, "SR") if item[0]["label"] == label]
    assert entry["binary_type"] == "dicom" and ds.SOPClassUID == COMPREHENSIVE_3D_SR
    return ds, hd.sr.Comprehensive3DSR.from_dataset(ds)


def sr_bytes(out: dict, binaries: list, label: str) -> bytes:
    return next(b for p, _, b in dicom_parts(out, binaries, "SR") if p["label"] == label)


def has_coordinates(group) -> bool:
    """What OHIF 3.13's SR loader needs of every group (else it throws and shows no measurement)."""
    items = list((group if hasattr(group, "ValueType") else group[0]).ContentSequence)
    return any(i.ValueType in ("SCOORD", "SCOORD3D") for i in items) or any(
        i.ValueType == "NUM" and len(i.get("ContentSequence", [])) == 1
        and i.ContentSequence[0].ValueType in ("SCOORD", "SCOORD3D") for i in items)


def test_sr_references_each_segment_of_each_segmentation(study, tmp_path):
    _, out, binaries = run(study, "get-label-mask")
    segs = {str(ds.SOPInstanceUID): ds for _, ds, _ in dicom_parts(out, binaries, "SEG")}
    assert [p["label"] for p, _, _ in dicom_parts(out, binaries, "SR")] == ["findings report"]
    ds, sr = sr_of(out, binaries, "findings report")
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
    absent = [g for g in sr.content.get_image_measurement_groups()
              if any(e.value == codes.DCM.Absent for e in g.get_qualitative_evaluations())]
    # the mock's label mask has "core" and "rim" wherever it has something: nothing is absent
    assert absent == []


def test_bounding_boxes_become_planar_regions_on_their_image(study, tmp_path):
    wire, out, binaries = run(study, "get-bounding-box-2d")
    ds, sr = sr_of(out, binaries)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert all(has_coordinates(g) for g in groups)
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
    _, findings = sr_of(out, binaries, "findings report")
    # lengths with a region are drawn (measurement report); a world length on a sagittal plane has none
    groups = sr.content.get_image_measurement_groups()
    assert all(has_coordinates(g) for g in groups)
    unplaced = findings.content.get_image_measurement_groups()
    groups = [*groups, *unplaced]
    items = wire.json["linear_measurements_2d"]
    used: list = []
    assert len(groups) == len(items) > len(study.series)
    by_uid = {i.sop_instance_uid: i for i in study.instances}
    for item in items:
        group = next(g for g in groups if g not in used and g.tracking_identifier == item["label"]
                     and _names_item(g.get_measurements()[0][0].ContentSequence[0], item))
        used.append(group)
        (length,) = group.get_measurements(name=codes.SCT.Length)
        assert len(length[0].ContentSequence) == 1  # one child: the region (or the image, without one)
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
                assert group in unplaced
            else:
                points = np.reshape(scoord3d[0].GraphicData, (-1, 3))
                np.testing.assert_allclose(points[:, :2], [item["start"], item["end"]], atol=1e-4)
                origin = np.array(position_of(study, item["SOPInstanceUID"], item.get("frame_number")))
                np.testing.assert_allclose((points - origin) @ normal, 0, atol=1e-3)  # on the image plane
                assert length.value == pytest.approx(float(np.linalg.norm(points[1] - points[0])), rel=1e-6)
        assert str(length.unit.value) == "mm"
    assert_valid(sr_bytes(out, binaries, "measurement report"), tmp_path, "sr-lengths")
    assert_valid(sr_bytes(out, binaries, "findings report"), tmp_path, "sr-lengths-unplaced")


def _names_item(child, item: dict) -> bool:
    """Whether a length's one child (its region, or its image) is that of this linear measurement."""
    if child.ValueType == "IMAGE":
        return child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == item["SOPInstanceUID"]
    if child.ValueType == "SCOORD":
        return (child.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == item["SOPInstanceUID"]
                and np.allclose(np.reshape(child.GraphicData, (-1, 2)), [item["start"], item["end"]]))
    return np.allclose(np.reshape(child.GraphicData, (-1, 3))[:, :2], [item["start"], item["end"]], atol=1e-4)


def test_classification_values_become_coded_evaluations(study, tmp_path):
    wire, out, binaries = run(study, "get-classification")
    assert len(out["parts"]) == 1
    _, sr = sr_of(out, binaries, "findings report")
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
    segs = dicom_parts(out, binaries, "SEG")
    (entry, ds, data), = segs
    check_segmentations(study, masks_of(wire), segs, tmp_path, model=("legacy", "unknown"))
    assert int(ds.NumberOfFrames) == 1  # the two empty planes are left out


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
        export_dicom({"protocol_version": "1.0", "parts": [part]}, [b"\1" * (4 * 8 * 9)], study, keep_arterys=True)
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
    check_segmentations(study, [(part, mask.tobytes())], dicom_parts(out, binaries, "SEG"), tmp_path,
                        model=("unnamed model", "unknown"))



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
        export_dicom({"protocol_version": "1.0", "parts": [volume]}, [b"\1" * 512], series_study, keep_arterys=True)


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
            if label:
                part["label_map"] = {"1": label, "2": "rim"}
        out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=False, model_name="mock_model")
        produced = [(p, b) for p, b in zip(out["parts"], binaries, strict=True) if "dicom_output" in p]
        assert produced, command
        for index, (part, data) in enumerate(produced):
            ds = read(data)
            assert ds.SpecificCharacterSet == "ISO_IR 192"
            assert str(ds.PatientName) == source_name
            if label and part["dicom_output"]["modality"] == "SEG":
                assert ds.SegmentSequence[0].SegmentLabel == label.replace("\\", "/")  # LO has no backslash
                assert ds.ContentLabel == "L SION LEFT"  # CS: A-Z, 0-9, space, underscore
            assert_valid(bytes(data), tmp_path, f"{command}-{index}")


def test_each_segmentation_is_alone_in_a_series_numbered_apart_from_every_other_run(study):
    """One SEG per series (OHIF shows a SEG series' first instance only; PS3.3 C.7.4.1.1.1: one frame of
    reference per series), each series numbered apart: a second run of the same command on the same study
    gets other numbers (study A showed five identical SEG series, all 9901), a description naming model,
    command and labels."""
    numbers = []
    for command in ("get-probability-mask", "get-label-mask", "get-probability-mask-2d"):
        _, out, binaries = _run(study, command, False)
        datasets = [ds for _, ds, _ in dicom_parts(out, binaries, "SEG") + dicom_parts(out, binaries, "SR")]
        assert len({ds.SeriesInstanceUID for ds in datasets}) == len(datasets)
        numbers += [int(ds.SeriesNumber) for ds in datasets]
        for ds in datasets:
            kind = {"SEG": "", "SR": " findings"}[ds.Modality]
            assert ds.SeriesDescription.startswith(f"mock_model {command}{kind}: ") and len(ds.SeriesDescription) <= 64
        labels = {"get-label-mask": "core, rim"}.get(command, "mock ")
        assert all(labels in ds.SeriesDescription for ds in datasets if ds.Modality == "SEG")
    _, again, binaries = _run(study, "get-probability-mask", False)
    numbers += [int(ds.SeriesNumber) for _, ds, _ in dicom_parts(again, binaries, "SEG")]
    assert len(set(numbers)) == len(numbers) and numbers == sorted(numbers)


def test_source_values_are_kept_within_their_vr_and_misdeclared_text_is_read_as_latin1(tmp_path, caplog):
    """Issue 18, row 15: a 5,000-character PatientName was copied whole into SEG and SR (PN allows 64
    characters per component group), and Latin-1 bytes declared UTF-8 became U+FFFD. Values are cut to their
    VR's limit; text not valid in its declared character set is read as ISO 8859-1, and the part's notes and
    a WARNING say so, naming the attribute, never the value."""
    record = factory.write_study(tmp_path / "study", [factory.SeriesSpec("ct", rows=16, cols=20, count=3)])
    for instance in record.instances:
        ds = pydicom.dcmread(instance.path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "A" * 5000 + "^" + "B" * 10
        ds.StudyDescription = "Étude thoracique".encode("latin-1")  # bytes that are not UTF-8
        ds.save_as(instance.path)
    study = as_study([i.path for i in record.instances])
    study.command = "get-label-mask"
    wire = checked(*from_result(MockModel().infer(study)), study.index())
    with caplog.at_level("WARNING", logger="worker.dicom_export"):
        out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=False, model_name="mock_model")
    produced = [(p, b) for p, b in zip(out["parts"], binaries, strict=True) if "dicom_output" in p]
    assert {p["dicom_output"]["modality"] for p, _ in produced} == {"SEG", "SR"}
    for index, (part, data) in enumerate(produced):
        ds = read(data)
        assert str(ds.PatientName) == "A" * 53 + "^" + "B" * 10  # the longest component cut, the other kept
        assert ds.StudyDescription == "Étude thoracique" and "\ufffd" not in ds.StudyDescription
        notes = part["dicom_output"]["notes"]
        assert any(n.startswith("StudyDescription is not valid") for n in notes), notes
        assert any(n.startswith("PatientName was longer") for n in notes), notes
        assert_valid(bytes(data), tmp_path, f"limits-{index}")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings and all("Étude" not in w and "AAAA" not in w for w in warnings)
    assert any("StudyDescription" in w for w in warnings)
