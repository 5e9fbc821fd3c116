"""dicom_geometry.frames: each frame's geometry (classic and enhanced headers) and placing patient points."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_geometry import FrameGeometry, frame_attribute, frame_geometry, plane_normal
from dicom_geometry.frames import geometry_values
from tests.dicom_factory import SAGITTAL, TILTED, _unit_normal, write_enhanced_series
from tests.imports import absolute_imports

ROOT = Path(__file__).resolve().parent.parent


def in_plane(geometry: FrameGeometry, col: float, row: float) -> np.ndarray:
    """The patient point of pixel (col, row), straight from the DICOM definition (PS3.3 C.7.6.2.1.1)."""
    row_spacing, col_spacing = geometry.pixel_spacing
    return (np.asarray(geometry.position) + col * col_spacing * np.asarray(geometry.orientation[:3])
            + row * row_spacing * np.asarray(geometry.orientation[3:]))


def test_enhanced_frames_take_their_own_position_and_the_shared_orientation(tmp_path):
    case = write_enhanced_series(tmp_path, stacks=1, frames=4)
    (path,) = case.paths
    ds = dcmread(path, stop_before_pixels=True)
    assert "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds
    normal, row_direction = _unit_normal(TILTED), np.asarray(TILTED[:3])

    for frame in range(4):
        geometry = frame_geometry(ds, frame)
        # 3 mm apart along the normal, sheared 1.5 mm per slice along the rows (write_enhanced_series)
        expected = np.array([30.0, -12.0, 40.0]) + normal * 3.0 * frame + row_direction * 1.5 * frame
        np.testing.assert_allclose(geometry.position, expected, atol=1e-5)
        assert geometry.orientation == pytest.approx(TILTED)
        assert geometry.pixel_spacing == (0.8, 0.7)


def test_the_frame_s_own_group_wins_over_the_shared_one_and_the_top_level():
    ds = Dataset()
    ds.ImagePositionPatient = [9, 9, 9]
    ds.PixelSpacing = [2, 2]
    shared = Dataset()
    shared.PlanePositionSequence = [Dataset()]
    shared.PlanePositionSequence[0].ImagePositionPatient = [5, 5, 5]
    ds.SharedFunctionalGroupsSequence = [shared]
    own = Dataset()
    own.PlanePositionSequence = [Dataset()]
    own.PlanePositionSequence[0].ImagePositionPatient = [1, 2, 3]
    ds.PerFrameFunctionalGroupsSequence = [own, Dataset()]

    assert frame_geometry(ds, 0).position == (1.0, 2.0, 3.0)
    assert frame_geometry(ds, 1).position == (5.0, 5.0, 5.0)  # no position of its own: the shared one
    assert frame_geometry(ds, 7).position == (5.0, 5.0, 5.0)
    assert frame_geometry(ds, 0).pixel_spacing == (2.0, 2.0)  # only at the top level
    assert frame_geometry(ds, 0).orientation is None and frame_geometry(ds, 0).normal is None


@pytest.mark.parametrize("bad", [[1, 2], [1, 2, 3, 4], [1, float("nan"), 3]])
def test_malformed_positions_are_absent(bad):
    ds = Dataset()
    ds.ImagePositionPatient = bad
    assert frame_geometry(ds).position is None


def test_points_of_a_tilted_plane_round_trip():
    geometry = FrameGeometry((12.5, -30.0, 7.25), TILTED, (0.8, 0.7))
    for col, row in [(0, 0), (13.0, 4.0), (2.5, 9.75)]:
        point = in_plane(geometry, col, row)
        assert geometry.pixel_of(point) == pytest.approx((col, row), abs=1e-4)
        assert geometry.pixel_of(point + 6.0 * geometry.normal) == pytest.approx((col, row), abs=1e-4)
        assert geometry.distance_from_plane(point + 6.0 * geometry.normal) == pytest.approx(6.0)
        # the protocol's [x, y] form: the point of the plane with that x and y
        assert geometry.pixel_of_xy(point[0], point[1]) == pytest.approx((col, row), abs=1e-4)


def test_x_and_y_name_no_point_of_a_sagittal_plane():
    geometry = FrameGeometry((0.0, 0.0, 0.0), SAGITTAL, (1.0, 1.0))
    assert geometry.pixel_of_xy(0.0, 5.0) is None
    assert geometry.pixel_of((0.0, 5.0, -3.0)) == pytest.approx((5.0, 3.0))
    assert FrameGeometry(None, SAGITTAL, (1.0, 1.0)).pixel_of((0, 0, 0)) is None


def test_dicom_geometry_depends_on_numpy_and_pydicom_only():
    allowed = {"numpy", "pydicom", "dicom_geometry", "__future__"} | set(sys.stdlib_module_names)
    for path in sorted((ROOT / "dicom_geometry").glob("*.py")):
        for line, name in absolute_imports(path.read_text(), str(path)):
            assert name.split(".")[0] in allowed, f"{path.name}:{line} imports {name}"


def test_the_plane_normal_is_computed_in_dicom_geometry_only():
    """One home for the normal: every other shipped module asks dicom_geometry (plane_normal, frame_geometry)."""
    packages = ("arterys_http", "bridge", "contract", "example_models", "mock_model", "service_runtime", "testtool",
                "worker")
    computing = [str(path.relative_to(ROOT)) for package in packages for path in sorted((ROOT / package).rglob("*.py"))
                 if "np.cross(" in path.read_text(encoding="utf-8")]
    assert computing == []


def test_the_unit_normal_and_the_point_of_a_plane_with_given_x_and_y():
    assert plane_normal([0, 1, 0, 0, 0, -2]) == pytest.approx([-1, 0, 0])  # scaled cosines: still a unit normal
    assert plane_normal([1, 0, 0, 1, 0, 0]) is None and plane_normal([1, 0]) is None and plane_normal(None) is None
    geometry = FrameGeometry((12.5, -30.0, 7.25), TILTED, (0.8, 0.7))
    point = in_plane(geometry, 3.0, 4.0)
    np.testing.assert_allclose(geometry.point_at_xy(point[0], point[1]), point, atol=1e-6)
    assert FrameGeometry((0.0, 0.0, 0.0), SAGITTAL, (1.0, 1.0)).point_at_xy(0.0, 5.0) is None


def test_a_frames_own_attribute_can_be_asked_without_the_instances():
    ds = Dataset()
    ds.ImagePositionPatient = [9, 9, 9]
    item = Dataset()
    item.PlanePositionSequence = [Dataset()]
    item.PlanePositionSequence[0].ImagePositionPatient = [1, 2, 3]
    ds.PerFrameFunctionalGroupsSequence = [item, Dataset()]
    assert frame_attribute(ds, 0, "PlanePositionSequence", "ImagePositionPatient", top_level=False) == [1, 2, 3]
    assert frame_attribute(ds, 1, "PlanePositionSequence", "ImagePositionPatient") == [9, 9, 9]
    assert frame_attribute(ds, 1, "PlanePositionSequence", "ImagePositionPatient", top_level=False) is None
    assert [(keyword, frame) for keyword, frame, _ in geometry_values(ds)] == [
        ("ImagePositionPatient", None), ("ImagePositionPatient", 0)]


def _read_back(ds: Dataset, implicit: bool = False) -> Dataset:
    """`ds` written as a file and read again as the worker reads one: elements not decoded yet."""
    import io

    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, "1.2.3"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer, stop_before_pixels=True)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit VR", "implicit VR"])
def test_top_level_values_not_decoded_yet_are_given_as_their_text_and_left_undecoded(implicit):
    ds = Dataset()
    ds.ImagePositionPatient = ["-100.5", "NaN", " 3 "]
    ds.PixelSpacing = ["0.8", "0.7"]
    read = _read_back(ds, implicit)
    assert list(geometry_values(read)) == [("ImagePositionPatient", None, ["-100.5", "NaN", "3"]),
                                           ("PixelSpacing", None, ["0.8", "0.7"])]
    assert type(read.get_item("ImagePositionPatient")).__name__ == "RawDataElement"  # nothing decoded


def test_a_value_in_another_encoding_is_decoded_so_that_a_nan_in_it_is_seen():
    from pydicom.dataelem import DataElement

    ds = Dataset()
    ds.add(DataElement(0x00200032, "FD", [0.0, float("nan"), 1.0]))  # ImagePositionPatient, binary doubles
    ((keyword, frame, value),) = geometry_values(_read_back(ds))
    assert keyword == "ImagePositionPatient" and frame is None
    assert np.isnan(list(value)[1])
