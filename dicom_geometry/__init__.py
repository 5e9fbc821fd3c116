"""DICOM geometry shared by the worker, the test tool and the mock models: numpy and pydicom only.

- `slice_order(headers)`: the one order of a series' instances for the protocol's 3D masks (rule in
  `dicom_geometry.order`), with the number of time points.
- `frame_geometry(ds, frame)`: position, orientation, pixel spacing and plane normal of one frame,
  enhanced multi-frame functional groups included, to place world coordinates on an image
  (`pixel_of`, `point_at_xy`); `frame_attribute` reads any attribute of a frame the same way.
- `plane_normal(orientation)`: the unit normal of an image plane, the one computation of it.
"""

from dicom_geometry.frames import FrameGeometry, frame_attribute, frame_count, frame_geometry, plane_normal
from dicom_geometry.order import POSITION_TOLERANCE_MM, SliceOrder, slice_order

__all__ = [
    "POSITION_TOLERANCE_MM", "FrameGeometry", "SliceOrder", "frame_attribute", "frame_count", "frame_geometry",
    "plane_normal", "slice_order",
]
