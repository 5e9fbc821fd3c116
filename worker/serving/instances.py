"""A received part made an `Instance`: its DICOM header read and checked before any model sees it.

The rule for what is an instance is dicom_geometry.acceptance's, shared with the test tool: a Part 10
file with a SOPInstanceUID whose pixel data is what its header declares; here its refusals become the
worker's errors, a 400 or a 413 naming the part. Then the geometry: a number that is not finite (NaN,
infinity) is the sender's mistake, but nothing stops it on its way: slice ordering skips it, and a model
that measures in world coordinates turns it into a NaN length, which the worker's answer check then blames
on the model (a 502). Refused here, it is a 400 naming the instance and the attribute. The values checked
are every one dicom_geometry may read (`geometry_values`: the top level and, for enhanced multi-frame
images, the shared and every per-frame functional group); values that are not numbers at all are left to
the readers, which ignore them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pydicom

from dicom_geometry.acceptance import ImageTooLarge, NotReadable, Refused, read_instance_header
from dicom_geometry.frames import geometry_values
from worker.sdk.study import Instance
from worker.serving import identifiers
from worker.serving.config import StudyLimits
from worker.serving.errors import BadRequest, TooLarge

log = logging.getLogger("worker.study")


class NotDicom(BadRequest):
    """The bytes are not a readable DICOM file at all (a studyPath folder may skip such files)."""


def parse_instance(index: int, path: Path | None = None, content_type: str = "", filename: str = "",
                   name: str = "", *, data: bytes | None = None, spool=None,
                   limits: StudyLimits | None = None, label: str = "") -> Instance:
    """The instance in `path` or `data`, its header read (no pixel data) and checked against its pixel data.

    Raises `NotDicom` for bytes that are not DICOM at all, `BadRequest` or `TooLarge` for an instance whose
    pixel data does not match its header or whose geometry is not finite, each message naming the instance by
    its label (its number: never its file name nor a UID, see worker/serving/identifiers.py).
    """
    instance = Instance(index, path, content_type, filename, name, data=data, spool=spool, label=label)
    label = instance.label
    with instance.open() as handle:
        instance.header = read_header(handle, instance.size, limits or StudyLimits(), label)
    identifiers.header_read(label, instance.header)
    check_geometry(instance.header, label)
    return instance


def read_header(handle, size: int, limits: StudyLimits, label: str) -> pydicom.Dataset:
    try:
        return read_instance_header(handle, size, label, limits.max_image_bytes)
    except NotReadable as error:
        log.info("%s is not readable DICOM: %s", label, error.reason, extra={"study_data": True})
        raise NotDicom(error.message) from error
    except ImageTooLarge as error:
        raise TooLarge(error.message) from None
    except Refused as error:
        raise BadRequest(error.message) from None


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
