"""Where one frame of a DICOM image lies in the patient: position, orientation, pixel spacing, the plane's
normal, and the plane's points.

Why a module of its own: classic images carry their geometry at the top level, enhanced multi-frame
images (Enhanced CT/MR, ...) carry it per frame in functional groups, and every consumer (slice order, the
worker's study and DICOM outputs, the mock model's checks, the test tool's drawings) must read both the
same way and compute the same normal. Lookup order for each attribute: the frame's own item of
PerFrameFunctionalGroupsSequence, then SharedFunctionalGroupsSequence, then the top level.

Conventions (DICOM PS3.3 C.7.6.2.1.1): ImagePositionPatient is the centre of the first transmitted
pixel, in mm; ImageOrientationPatient is the direction of increasing column (along a row) followed by
the direction of increasing row (down a column); PixelSpacing is (row spacing, column spacing), that is
(vertical, horizontal) distance between pixel centres.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

# Below this |unit normal . z| an image plane contains the z axis (sagittal, coronal): patient x and y alone
# cannot name one of its points (and near it, an error in x or y would move z a thousand times as far).
PARALLEL_TO_Z = 1e-3
# (functional group, attribute) of each piece of a frame's geometry, where frame_attribute finds it.
GEOMETRY = (
    ("PlanePositionSequence", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing"),
)
FUNCTIONAL_GROUPS = ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence")


def plane_normal(orientation) -> np.ndarray | None:
    """The unit normal of the image plane that ImageOrientationPatient's six cosines describe (the row
    direction x the column direction), or None without six numbers or with parallel directions."""
    cosines = _floats(orientation, 6)
    if cosines is None:
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 0 else None


@dataclass(frozen=True)
class FrameGeometry:
    position: tuple[float, float, float] | None  # ImagePositionPatient of the frame (mm)
    orientation: tuple[float, float, float, float, float, float] | None  # ImageOrientationPatient
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) in mm

    @property
    def normal(self) -> np.ndarray | None:
        """Unit normal of the image plane (row direction x column direction), or None without orientation."""
        return plane_normal(self.orientation)

    def along_normal(self, normal) -> float | None:
        """The frame's position projected on `normal` (mm), the coordinate slices are ordered by."""
        return None if self.position is None else float(np.dot(normal, self.position))

    def pixel_of(self, point) -> tuple[float, float] | None:
        """Patient point (x, y, z) mm -> (column, row) on this frame; the distance off the plane is dropped."""
        if self.position is None or self.orientation is None or self.pixel_spacing is None:
            return None
        offset = np.asarray(point, dtype=np.float64) - np.asarray(self.position)
        row_dir, col_dir = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        row_spacing, col_spacing = self.pixel_spacing
        return float(offset @ row_dir) / col_spacing, float(offset @ col_dir) / row_spacing

    def point_at_xy(self, x: float, y: float) -> np.ndarray | None:
        """The point [x, y, z] (mm) of this frame's plane whose patient x and y are given.

        None when the plane contains the z axis (sagittal, coronal): x and y then name no single point.
        """
        normal = self.normal
        if normal is None or self.position is None or abs(normal[2]) < PARALLEL_TO_Z:
            return None
        px, py, pz = self.position
        return np.array([x, y, pz - (normal[0] * (x - px) + normal[1] * (y - py)) / normal[2]])

    def pixel_of_xy(self, x: float, y: float) -> tuple[float, float] | None:
        """(column, row) of the point of this frame's plane whose patient x and y are given (point_at_xy)."""
        point = self.point_at_xy(x, y)
        return None if point is None else self.pixel_of(point)

    def distance_from_plane(self, point) -> float | None:
        """Signed distance (mm) of a patient point from this frame's plane."""
        normal = self.normal
        if normal is None or self.position is None:
            return None
        return float(normal @ (np.asarray(point, dtype=np.float64) - np.asarray(self.position)))


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames, at least 1."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def frame_geometry(ds: Dataset, frame: int = 0) -> FrameGeometry:
    """Geometry of the 0-based `frame` of an instance (header without pixels is enough)."""
    (position_at, position), (orientation_at, orientation), (spacing_at, spacing) = GEOMETRY
    position = _floats(frame_attribute(ds, frame, position_at, position), 3)
    orientation = _floats(frame_attribute(ds, frame, orientation_at, orientation), 6)
    spacing = _floats(frame_attribute(ds, frame, spacing_at, spacing), 2)
    if spacing is not None and not all(value > 0 for value in spacing):
        spacing = None
    return FrameGeometry(position, orientation, spacing)  # type: ignore[arg-type]


def frame_attribute(ds: Dataset, frame: int, group: str, keyword: str, top_level: bool = True):
    """An attribute of one frame: per-frame functional group, shared functional group, then (unless
    `top_level` is False: a value for the whole instance would not be this frame's) the top level."""
    for sequence, index in zip(FUNCTIONAL_GROUPS, (frame, 0), strict=True):
        items = ds.get(sequence)
        if not items or not 0 <= index < len(items):
            continue
        group_items = items[index].get(group)
        if group_items:
            value = group_items[0].get(keyword)
            if value is not None:
                return value
    return ds.get(keyword) if top_level else None


def geometry_values(ds: Dataset) -> Iterator[tuple[str, int | None, object]]:
    """Every geometry value of an instance, wherever frame_attribute may read one: (keyword, the 0-based frame
    of a per-frame group's value or None, value). A top-level value not decoded yet comes as its numbers'
    text (a list of str), as the file holds them: decoding a DS value (pydicom's DSfloat, checked) costs
    about 0.07 ms, and this runs on every instance the worker receives, most of which nothing else decodes."""
    sequences = [(sequence, sequence == "PerFrameFunctionalGroupsSequence")
                 for sequence in reversed(FUNCTIONAL_GROUPS) if tag_for_keyword(sequence) in ds]  # shared first
    for group, keyword in GEOMETRY:
        if (value := _top_level_value(ds, keyword)) is not None:
            yield keyword, None, value
        for sequence, per_frame in sequences:
            for frame, item in enumerate(ds.get(sequence) or ()):
                for group_item in item.get(group) or ():
                    if (value := group_item.get(keyword)) is not None:
                        yield keyword, frame if per_frame else None, value


def _top_level_value(ds: Dataset, keyword: str):
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    element = ds.get_item(tag)
    # Text only for a DS element as read (VR DS, or none said: implicit VR, DS in the dictionary); any other
    # encoding (binary FD, say) is decoded by pydicom, so that a NaN in it is seen.
    if isinstance(element, RawDataElement) and element.VR in (None, "DS") and element.value is not None:
        return [number.strip() for number in element.value.decode("latin-1").split("\\") if number.strip()] or None
    return ds.get(keyword)


def _floats(value, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(v) for v in numbers) else None
