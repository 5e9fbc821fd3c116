"""DICOM geometry shared by the worker, the test tool and the mock models: numpy and pydicom only.

- `slice_order(headers)`: the one order of a series' instances for the protocol's 3D masks (rule in
  `dicom_geometry.order`), with the number of time points.
- `frame_geometry(ds, frame)`: position, orientation and pixel spacing of one frame, enhanced
  multi-frame functional groups included, to place world coordinates on an image.
"""

from dicom_geometry.frames import FrameGeometry, frame_attribute, frame_count, frame_geometry
from dicom_geometry.order import POSITION_TOLERANCE_MM, SliceOrder, slice_order

__all__ = [
    "POSITION_TOLERANCE_MM", "FrameGeometry", "SliceOrder", "frame_attribute", "frame_count", "frame_geometry",
    "slice_order",
]
