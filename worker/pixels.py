"""The worker's side of dicom_geometry.acceptance (the rule for what is an instance, shared with the test
tool): its refusals as the worker's errors, a 400 or a 413 naming the part."""

from __future__ import annotations

import logging

import pydicom

from dicom_geometry.acceptance import ImageTooLarge, NotReadable, Refused, read_instance_header
from worker.config import StudyLimits
from worker.errors import BadRequest, TooLarge

log = logging.getLogger("worker.study")


class NotDicom(BadRequest):
    """The bytes are not a readable DICOM file at all (a studyPath folder may skip such files)."""


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
