"""Where one frame of a DICOM image lies in the patient: position, orientation and pixel spacing.

Why a module of its own: classic images carry their geometry at the top level, enhanced multi-frame
images (Enhanced CT/MR, ...) carry it per frame in functional groups, and every consumer (slice order,
drawing world coordinates) must read both the same way. Lookup order for each attribute: the frame's
own item of PerFrameFunctionalGroupsSequence, then SharedFunctionalGroupsSequence, then the top level.

Conventions (DICOM PS3.3 C.7.6.2.1.1): ImagePositionPatient is the centre of the first transmitted
pixel, in mm; ImageOrientationPatient is the direction of increasing column (along a row) followed by
the direction of increasing row (down a column); PixelSpacing is (row spacing, column spacing), that is
(vertical, horizontal) distance between pixel centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

# Below this |normal . z| an image plane contains the z axis (sagittal, coronal): patient x and y alone
# cannot name one of its points.
_PARALLEL_TO_Z = 1e-6


@dataclass(frozen=True)
class FrameGeometry:
    position: tuple[float, float, float] | None  # ImagePositionPatient of the frame (mm)
    orientation: tuple[float, float, float, float, float, float] | None  # ImageOrientationPatient
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) in mm

    @property
    def normal(self) -> np.ndarray | None:
        """Unit normal of the image plane (row direction x column direction), or None without orientation."""
        if self.orientation is None:
            return None
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        length = float(np.linalg.norm(normal))
        return normal / length if length > 0 else None

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

    def pixel_of_xy(self, x: float, y: float) -> tuple[float, float] | None:
        """(column, row) of the point of this frame's plane whose patient x and y are given.

        None when the plane contains the z axis (sagittal, coronal): x and y then name no single point.
        """
        if self.position is None or self.orientation is None or self.pixel_spacing is None:
            return None
        row_dir, col_dir = self.orientation[:3], self.orientation[3:]
        if abs(row_dir[0] * col_dir[1] - row_dir[1] * col_dir[0]) < _PARALLEL_TO_Z:  # the normal's z part
            return None
        row_spacing, col_spacing = self.pixel_spacing
        # x = px + col * cs * row_dir.x + row * rs * col_dir.x, and the same for y: a 2 x 2 system.
        matrix = np.array([[col_spacing * row_dir[0], row_spacing * col_dir[0]],
                           [col_spacing * row_dir[1], row_spacing * col_dir[1]]])
        col, row = np.linalg.solve(matrix, [x - self.position[0], y - self.position[1]])
        return float(col), float(row)

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
    position = _floats(frame_attribute(ds, frame, "PlanePositionSequence", "ImagePositionPatient"), 3)
    orientation = _floats(frame_attribute(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    spacing = _floats(frame_attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if spacing is not None and not all(value > 0 for value in spacing):
        spacing = None
    return FrameGeometry(position, orientation, spacing)  # type: ignore[arg-type]


def frame_attribute(ds: Dataset, frame: int, group: str, keyword: str):
    """An attribute of one frame: per-frame functional group, shared functional group, then top level."""
    places = (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0))
    for sequence, index in places:
        items = ds.get(sequence)
        if not items or not 0 <= index < len(items):
            continue
        group_items = items[index].get(group)
        if group_items:
            value = group_items[0].get(keyword)
            if value is not None:
                return value
    return ds.get(keyword)


def _floats(value, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(v) for v in numbers) else None
