"""Where an image plane lies in the patient: for lengths in mm and for world points in 3D.

Single-frame images carry PixelSpacing, ImagePositionPatient and ImageOrientationPatient at the top level;
enhanced multi-frame images carry them in their functional groups (per frame, else shared).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from worker.study import Instance


@dataclass(frozen=True)
class FramePlane:
    position: np.ndarray  # ImagePositionPatient: centre of the top-left pixel, mm
    row: np.ndarray  # direction of increasing column index (first three cosines)
    column: np.ndarray  # direction of increasing row index (last three cosines)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.column)


def _groups(header: Dataset, frame: int | None) -> list[Dataset]:
    """The places an attribute may live, most specific first."""
    found = []
    if frame is not None:
        per_frame = header.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and len(per_frame) >= frame:
            found.append(per_frame[frame - 1])
        shared = header.get("SharedFunctionalGroupsSequence")
        if shared:
            found.append(shared[0])
    return found


def _find(header: Dataset, frame: int | None, sequence: str, keyword: str):
    for group in _groups(header, frame):
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0][keyword].value
    return header.get(keyword)


def pixel_spacing(instance: Instance, frame: int | None) -> tuple[float, float] | None:
    """(between rows, between columns) in mm, or None when the image does not say."""
    value = _find(instance.header, frame, "PixelMeasuresSequence", "PixelSpacing")
    if not value or len(value) != 2:
        return None
    return float(value[0]), float(value[1])


def frame_plane(instance: Instance, frame: int | None) -> FramePlane | None:
    position = _find(instance.header, frame, "PlanePositionSequence", "ImagePositionPatient")
    orientation = _find(instance.header, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    if not position or len(position) != 3 or not orientation or len(orientation) != 6:
        return None
    cosines = np.array([float(v) for v in orientation])
    return FramePlane(np.array([float(v) for v in position]), cosines[:3], cosines[3:])


def lift_to_plane(x: float, y: float, plane: FramePlane) -> np.ndarray | None:
    """The point of the image plane with patient coordinates x and y, or None when the plane contains the
    z axis (sagittal, coronal): there x and y do not say where on the plane the point is."""
    normal = plane.normal
    if abs(normal[2]) < 1e-3:
        return None
    z = plane.position[2] - (normal[0] * (x - plane.position[0]) + normal[1] * (y - plane.position[1])) / normal[2]
    return np.array([x, y, z])
