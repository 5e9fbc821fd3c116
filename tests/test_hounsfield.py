"""example_models.hounsfield on studies with known answers, in every transfer syntax, and on pydicom's own files.

The phantom: a CT of 6 slices of 40 x 48 pixels (0.8 x 0.7 mm, 2.5 mm apart): soft tissue (40 HU) inside a
3-pixel frame of outside air (-1000 HU, touches the edge, so it is not "air"), two bone blocks (900 and
1000 HU: 240 and 90 voxels), a 2-voxel bone speck (below min_voxels), an air tube (-900 HU, 216 voxels), a
lung-like block (-700 HU, 40 voxels) and a 1-voxel air pocket (dropped). A voxel is 1.4 mm3.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_rescale
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from example_models.hounsfield import AIR, BONE, HounsfieldModel, Options
from tests import dicom_factory as factory
from tests.test_dicom_export import assert_valid
from tests.test_dicom_export_studies import as_study
from tests.test_hounsfield_components import flood_fill_components, touches_border
from tests.worker_client import dicom_parts, infer
from worker.sdk.refusals import InvalidInput, UnsupportedStudy
from worker.sdk.study import Study
from worker.serving.dicom_export import export_dicom
from worker.serving.loading import load_model_object
from worker.serving.results import checked, from_result

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # bundled: nothing is downloaded
DEPTH, ROWS, COLS = 6, 40, 48
VOXEL_ML = 0.8 * 0.7 * 2.5 / 1000


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """(HU volume, expected labels), both (depth, rows, cols)."""
    hu = np.full((DEPTH, ROWS, COLS), 40, dtype=np.int16)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    hu[:, :3, :] = hu[:, -3:, :] = hu[:, :, :3] = hu[:, :, -3:] = -1000
    for z, r, c, value, label in [
        (slice(1, 4), slice(8, 16), slice(10, 20), 900, BONE),
        (slice(2, 5), slice(25, 30), slice(30, 36), 1000, BONE),  # 8-bit JPEG reaches 1016 HU
        (slice(5, 6), slice(20, 22), slice(24, 25), 700, 0),  # 2 voxels: too small
        (slice(0, 6), slice(18, 24), slice(8, 14), -900, AIR),
        (slice(0, 2), slice(30, 34), slice(10, 15), -700, AIR),
        (slice(3, 4), slice(10, 11), slice(40, 41), -1000, 0),  # 1 voxel: too small
    ]:
        hu[z, r, c] = value
        labels[z, r, c] = label
    return hu, labels


EXPECTED_BOXES = [  # label, slice, [left, top], [right, bottom] (pixel edges), voxels: largest first per label
    ("bone", 1, [10, 8], [20, 16], 240),
    ("bone", 2, [30, 25], [36, 30], 90),
    ("air", 0, [8, 18], [14, 24], 216),
    ("air", 0, [10, 30], [15, 34], 40),
]


def _slice(study_uid: str, spec: factory.SeriesSpec, z: int, hu: np.ndarray, syntax) -> pydicom.Dataset:
    normal = np.cross(spec.orientation[:3], spec.orientation[3:])
    position = tuple(float(v) for v in np.array([-100.0, -80.0, 30.0]) + normal * spec.spacing * z)
    ds = factory.make_dataset(study_uid=study_uid, spec=spec, number=z + 1, position=position)
    if syntax == JPEGBaseline8Bit:  # 8 bits: stored = (HU + 1024) / 8, encoded by Pillow
        stored = np.round((hu.astype(np.int32) + 1024) / 8).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(stored, "L").save(buffer, "JPEG", quality=95)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.RescaleSlope = 8, 8, 7, 8
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        return ds
    stored = (hu.astype(np.int32) + 1024).astype(np.uint16)
    ds.PixelData = stored.astype(">u2" if syntax == ExplicitVRBigEndian else "<u2").tobytes()
    if syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(syntax)
    elif syntax == JPEG2000:
        ds.compress(JPEG2000, j2k_cr=[10])  # lossy: the phantom's plateaus stay far from the thresholds
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


def write_phantom(folder: Path, syntax=ExplicitVRLittleEndian, multiframe: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    hu, _ = phantom()
    study_uid = generate_uid()
    spec = factory.SeriesSpec("phantom", rows=ROWS, cols=COLS, count=DEPTH)
    slices = [_slice(study_uid, spec, z, hu[z], syntax) for z in range(DEPTH)]
    if multiframe:
        for ds in slices:
            for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyTime",
                            "ReferringPhysicianName", "Manufacturer"):
                setattr(ds, keyword, "")
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(slices, spec.series_uid, 1, generate_uid(), 1)
        path = folder / "phantom_enhanced.dcm"
        enhanced.save_as(path, enforce_file_format=True)
        return [path]
    paths = []
    for z in (3, 0, 5, 1, 4, 2):  # not in anatomical order on purpose
        path = folder / f"slice_{z}.dcm"
        slices[z].save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
                          little_endian=syntax != ExplicitVRBigEndian)
        paths.append(path)
    return paths


def answer(paths: list[Path], request: dict | None = None):
    study = as_study(paths, request)
    study.command = "segment-hounsfield"
    result = HounsfieldModel().infer(study)
    wire = checked(*from_result(result), study.index())  # a valid Arterys answer
    return study, result, wire


SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless, JPEGBaseline8Bit,
            JPEG2000Lossless, JPEG2000]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_phantom_gives_the_known_labels_boxes_and_volumes(tmp_path, syntax):
    paths = write_phantom(tmp_path, syntax)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax
    study, result, wire = answer(paths)
    _, expected = phantom()
    (mask,) = result.parts
    np.testing.assert_array_equal(mask.array, expected)
    assert mask.binary_type == "numeric_label_mask" and dict(mask.label_map) == {1: "bone", 2: "air"}
    series = study.series[0]
    boxes = [(b.label, next(z for z, i in enumerate(series.instances) if i.sop_instance_uid == b.sop_instance_uid),
              list(b.top_left), list(b.bottom_right), b.extra["voxels"]) for b in result.bounding_boxes]
    assert boxes == EXPECTED_BOXES
    summary = wire.json["series_ml_json"][series.uid]
    assert summary == {"bone_components": 2, "air_components": 2,
                       "bone_volume_ml": round(330 * VOXEL_ML, 3), "air_volume_ml": round(256 * VOXEL_ML, 3)}
    assert wire.json["study_ml_json"]["volumes_ml"] == {series.uid: {"bone": 0.462, "air": 0.358}}


def test_enhanced_multiframe_phantom_gives_the_same_answer_with_frame_numbers(tmp_path):
    study, result, _ = answer(write_phantom(tmp_path, multiframe=True))
    _, expected = phantom()
    # highdicom's conversion writes the frames head to feet (z descending): the mask follows the frames
    frames = pydicom.dcmread(study.instances[0].path, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    order = [round((float(f.PlanePositionSequence[0].ImagePositionPatient[2]) - 30.0) / 2.5) for f in frames]
    assert order == [5, 4, 3, 2, 1, 0]
    np.testing.assert_array_equal(result.parts[0].array, expected[order])
    # largest slice, first in frame order: bone A z=3 (frame 3), bone B z=4 (frame 2), tube z=5, lung z=1
    assert [(b.label, b.frame_number) for b in result.bounding_boxes] == [
        ("bone", 3), ("bone", 2), ("air", 1), ("air", 5)]
    assert result.series_ml_json[study.series[0].uid]["bone_volume_ml"] == 0.462


def test_request_options_move_the_thresholds(tmp_path):
    paths = write_phantom(tmp_path)
    _, result, _ = answer(paths, {"bone_min_hu": 950, "air_max_hu": -950, "min_voxels": 1})
    labels = result.parts[0].array
    assert np.count_nonzero(labels == BONE) == 90  # only the 1000 HU block
    assert np.count_nonzero(labels == AIR) == 1  # only the -1000 HU pocket inside the body
    with pytest.raises(InvalidInput, match="bone_min_hu"):
        answer(paths, {"bone_min_hu": "high"})
    with pytest.raises(InvalidInput, match="below"):
        answer(paths, {"bone_min_hu": -500})


def test_dicom_outputs_of_the_model_are_valid_and_match(tmp_path):
    study, result, wire = answer(write_phantom(tmp_path / "in", RLELossless))
    out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=False,
                                 model_name=HounsfieldModel.name, model_version=HounsfieldModel.version)
    seg = pydicom.dcmread(io.BytesIO(bytes(binaries[0])))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["bone", "air"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "272673000"  # SCT Bone
    pixels = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        [i.sop_instance_uid for i in study.series[0].instances], combine_segments=True, relabel=False)
    np.testing.assert_array_equal(pixels, result.parts[0].array)
    labels = [p["label"] for p in out["parts"]]
    assert labels == ["bone, air", "measurement report", "findings report"]
    regions = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(bytes(binaries[1]))))
    assert len(regions.content.get_planar_roi_measurement_groups()) == 4  # one per bounding box
    findings = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(bytes(binaries[2]))))
    # volumes in mL (UCUM "ml", SCT Volume) in the group of the segment they measure, not "no units" numbers
    volumes = {g.tracking_identifier: [(m.name.value, m.name.scheme_designator, m.value, m.unit.value)
                                       for m in g.get_measurements()]
               for g in findings.content.get_volumetric_roi_measurement_groups()}
    assert volumes == {"bone": [("118565006", "SCT", 0.462, "ml")], "air": [("118565006", "SCT", 0.358, "ml")]}
    groups = findings.content.get_image_measurement_groups()
    names = {m.name.meaning for g in groups for m in g.get_measurements()}
    assert names == {"bone_components", "air_components"}  # no volume twice, no request option
    folder = tmp_path / "out"
    folder.mkdir()
    for index, data in enumerate(binaries):
        assert_valid(bytes(data), folder, f"hounsfield{index}")


def test_a_label_found_nowhere_is_no_segment_but_reported_as_looked_for(tmp_path):
    """Found by a PACS integrator: segment "air" had 0 frames and a TID 1411 finding pointed at it. A label
    with no pixel is no segment; the report says it was looked for and not found (TID 1501, Presence of
    property: Absent). Request options are settings, never results (min_voxels was reported as one)."""
    request = {"bone_min_hu": 2000, "min_voxels": 10}  # no bone reaches 2000 HU
    study, _, wire = answer(write_phantom(tmp_path / "in"), request)
    out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=False,
                                 model_name=HounsfieldModel.name, model_version=HounsfieldModel.version)
    seg = pydicom.dcmread(io.BytesIO(bytes(binaries[0])))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["air"]
    findings = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(bytes(binaries[-1]))))
    assert [g.tracking_identifier for g in findings.content.get_volumetric_roi_measurement_groups()] == ["air"]
    (absent,) = [g for g in findings.content.get_image_measurement_groups()
                 if any(e.value.value == "121054" for e in g.get_qualitative_evaluations())]
    assert absent.tracking_identifier == "bone: not found" and absent.finding_type.value == "272673000"
    looked_at = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in absent[0].ContentSequence
                 if i.ValueType == "IMAGE"}
    assert looked_at == {i.sop_instance_uid for i in study.instances}
    every_name = [item.ConceptNameCodeSequence[0].CodeMeaning for group in
                  findings.content.get_image_measurement_groups() for item in group[0].ContentSequence]
    assert not any(name in request for name in every_name)
    assert_valid(bytes(binaries[-1]), tmp_path, "absent")


# ------------------------------------------------------------------------------- pydicom's own files


def reference_labels(volume_hu: np.ndarray, min_voxels: int = 10) -> np.ndarray:
    """Thresholds + a flood fill, written independently of the model."""
    labels = np.zeros(volume_hu.shape, dtype=np.uint8)
    for value, inside in ((BONE, volume_hu >= 300), (AIR, volume_hu <= -400)):
        candidates = inside.astype(np.uint8)
        for component in flood_fill_components(candidates, 1):
            if len(component) >= min_voxels and not (value == AIR and touches_border(component, volume_hu.shape)):
                labels[tuple(np.array(sorted(component)).T)] = value
    return labels


@pytest.mark.parametrize("names", [
    ["CT_small.dcm"],  # explicit little endian, 128 x 128
    [f"dicomdirtests/77654033/CT2/{n}" for n in ("17106", "17136", "17166", "17196")],  # a 4-slice series
])
def test_pydicom_ct_files_match_a_reference_segmentation(names):
    paths = [PYDICOM_FILES / name for name in names]
    assert all(p.is_file() for p in paths)
    study, result, _ = answer(paths)
    (mask,) = result.parts
    series = study.series[0]
    volume = np.stack([apply_rescale(pydicom.dcmread(i.path).pixel_array, i.header) for i in series.instances])
    np.testing.assert_array_equal(mask.array, reference_labels(volume))
    assert np.count_nonzero(mask.array) > 0  # the files hold bone or air: the comparison is not vacuous


def test_pydicom_jpeg2000_ct_is_decoded_and_segmented():
    """693_J2KI.dcm: a 512 x 512 CT slice in lossy JPEG 2000."""
    path = PYDICOM_FILES / "693_J2KI.dcm"
    _, result, _ = answer([path])
    ds = pydicom.dcmread(path)
    hu = apply_rescale(ds.pixel_array, ds)
    labels = result.parts[0].array[0]
    assert np.all(hu[labels == BONE] >= 300) and np.all(hu[labels == AIR] <= -400)
    assert np.count_nonzero(labels == BONE) > 1000  # a skull or spine is there
    thresholded = np.count_nonzero(hu >= 300)
    assert np.count_nonzero(labels == BONE) >= 0.9 * thresholded  # only specks are dropped


def test_a_transfer_syntax_no_decoder_handles_is_unsupported_not_a_failure(tmp_path):
    """MPEG-2 video: no decoder here. The model says so (422), naming the syntax, instead of raising (500)."""
    paths = write_phantom(tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = MPEG2MPML
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnsupportedStudy, match=r"encoded as MPEG2 .*\(1\.2\.840\.10008\.1\.2\.4\.100\)"):
        answer(paths)


def test_studies_without_ct_are_unsupported_and_other_series_are_skipped(tmp_path):
    with pytest.raises(UnsupportedStudy, match="no CT series"):
        answer([PYDICOM_FILES / "MR_small.dcm"])
    study, result, wire = answer([PYDICOM_FILES / "MR_small.dcm", PYDICOM_FILES / "CT_small.dcm"])
    mr = next(s.uid for s in study.series if s.instances[0].header.Modality == "MR")
    assert wire.json["study_ml_json"]["skipped_series"] == [mr]
    assert len(result.parts) == 1


def _body_series(folder: Path, depth: int, size: int = 128) -> Study:
    """`depth` slices of a body (40 HU) in air with a bone disc and a lung disc, uncompressed."""
    yy, xx = np.mgrid[0:size, 0:size]
    hu = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 55 ** 2, 40, -1000).astype(np.int16)
    hu[(yy - 50) ** 2 + (xx - 60) ** 2 < 12 ** 2] = 800
    hu[(yy - 85) ** 2 + (xx - 70) ** 2 < 10 ** 2] = -850
    spec = factory.SeriesSpec("long", rows=size, cols=size, count=depth)
    folder.mkdir()
    paths = []
    for z in range(depth):
        paths.append(folder / f"{z}.dcm")
        _slice(generate_uid(), spec, z, hu, ExplicitVRLittleEndian).save_as(paths[-1], enforce_file_format=True)
    return as_study(paths)


def _peak_beyond_mask(study: Study) -> int:
    tracemalloc.start()
    try:
        labels, components = HounsfieldModel().segment(study.series[0], Options(), study)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [len(components[BONE]), len(components[AIR])] == [1, 1]  # the bone and the lung, whole
    return peak - labels.nbytes


def test_frames_are_read_one_at_a_time(tmp_path):
    """Beyond the mask, memory does not grow with the number of slices: frames are decoded one at a time.

    Decoding the whole series at once would add 64 KiB (one float32 slice) per slice; doubling the series
    from 24 to 48 slices adds a small fraction of that, and the total stays under a quarter of it."""
    small, large = (_peak_beyond_mask(_body_series(tmp_path / str(depth), depth)) for depth in (24, 48))
    slice_bytes = 128 * 128 * 4
    assert large - small < 24 * slice_bytes / 6, (small, large)  # headers parsed on the way grow a little
    assert large < 48 * slice_bytes / 4, (small, large)


def test_python_m_worker_hosts_it(tmp_path, worker_process):
    """`python -m worker --model example_models.hounsfield` loads it and answers over gRPC."""
    assert isinstance(load_model_object("example_models.hounsfield"), HounsfieldModel)
    worker = worker_process("--model", "example_models.hounsfield")
    paths = write_phantom(tmp_path, JPEG2000Lossless)
    reply = infer(worker.stub(), {"inference_command": "segment-hounsfield"}, dicom_parts(paths))
    (part,) = reply.json["parts"]
    assert part["label_map"] == {"1": "bone", "2": "air"}
    labels = np.frombuffer(reply.binaries[0], dtype=np.uint8)
    assert (np.count_nonzero(labels == BONE), np.count_nonzero(labels == AIR)) == (330, 256)
    assert len(reply.json["bounding_boxes_2d"]) == 4
