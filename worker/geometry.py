"""Refuses an instance whose geometry holds a number that is not finite (NaN, infinity), before any model sees it.

Such a value is the sender's mistake, but nothing stops it on its way: slice ordering skips it, and a model
that measures in world coordinates turns it into a NaN length, which the worker's answer check then
blames on the model (a 502). Refused here, it is a 400 naming the instance and the attribute. The values
are every one dicom_geometry may read (`geometry_values`: the top level and, for enhanced multi-frame
images, the shared and every per-frame functional group). Values that are not numbers at all are left to
the readers, which ignore them as before.
"""

from __future__ import annotations

import math

import pydicom

from dicom_geometry.frames import geometry_values
from worker.errors import BadRequest


def check_geometry(header: pydicom.Dataset, label: str) -> None:
    """Raises BadRequest when a geometry attribute of `header` holds NaN or an infinity."""
    for keyword, frame, value in geometry_values(header):
        where = keyword if frame is None else f"{keyword} of frame {frame + 1}"
        for number in value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else (value,):
            try:
                finite = math.isfinite(float(number))
            except (TypeError, ValueError):
                continue  # not a number at all: the geometry readers ignore it
            if not finite:
                raise BadRequest(f"{label}: {where} holds {number!s:.20}, not a finite number; fix the instance's "
                                 "geometry (positions, orientations and spacings must be real numbers)")
