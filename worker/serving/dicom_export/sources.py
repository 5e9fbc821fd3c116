"""The source images behind each mask plane, and header copies that highdicom accepts.

Only headers are needed (no pixel data): a mask plane is tied to one source frame, and a Segmentation
copies that frame's frame of reference, orientation, pixel spacing and position.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass

import highdicom as hd
import pydicom
from highdicom._standard_utils import is_attribute_in_iod  # private, but the rule highdicom applies
from pydicom import Dataset
from pydicom.dataelem import DataElement

from dicom_geometry.frames import frame_attribute
from worker.sdk.refusals import UnsupportedStudy
from worker.sdk.study import Instance, Series
from worker.serving.dicom_export import vr

# Type 2 attributes of the Patient and General Study modules that highdicom copies from the source and
# that real studies (and anonymised ones) often lack: present but empty is what DICOM asks for.
_TYPE2_EMPTY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


log = logging.getLogger("worker.dicom_export")


class DicomExportError(UnsupportedStudy):
    """A result cannot be written as DICOM for this study (geometry missing, highdicom refused it).

    An UnsupportedStudy (HTTP 422): the study is fine for the model, not for the format asked for."""


@dataclass(frozen=True)
class Plane:
    """One source frame: a single-frame instance (frame None) or frame `frame` (1-based) of a multi-frame one."""

    instance: Instance
    frame: int | None = None


@dataclass
class Chunk:
    """Planes that become one Segmentation: one time point, and at most one multi-frame instance."""

    planes: list[Plane]
    start: int  # index of the first plane in the mask's (timepoints * depth) planes
    timepoint: int = 0  # 0-based


def series_planes(series: Series) -> list[Plane]:
    """Every frame of the series in the protocol's mask order (instances in series order, frames in order)."""
    planes = []
    for instance in series.instances:
        if is_multiframe(instance):
            planes.extend(Plane(instance, number) for number in range(1, instance.frames + 1))
        else:
            planes.append(Plane(instance))
    return planes


def is_multiframe(instance: Instance) -> bool:
    """Whether the instance's IOD is a multi-frame one (an Enhanced CT of one frame is): highdicom's own test,
    so that frames are addressed the way highdicom will address them."""
    return instance.frames > 1 or _multiframe_iod(str(instance.header.get("SOPClassUID", "")))


@functools.lru_cache(maxsize=64)
def _multiframe_iod(sop_class_uid: str) -> bool:
    """highdicom's is_multiframe_image (whether the IOD has Number of Frames), once per SOP class: it scans
    the IOD's module tables, 1.5 ms a call, which was 4.6 s of a 1,500-slice export."""
    return bool(sop_class_uid) and is_attribute_in_iod("NumberOfFrames", sop_class_uid)


def volume_chunks(series: Series, timepoints: int, depth: int) -> list[Chunk]:
    """Splits a 3D/4D mask's planes at time points and at multi-frame instance boundaries.

    Why: a Segmentation derives from one series of single-frame images or from exactly one multi-frame
    image (highdicom's rule), and its planes may not repeat a position, which time points do.
    """
    planes = series_planes(series)
    chunks: list[Chunk] = []
    for timepoint in range(timepoints):
        current: list[Plane] = []
        start = timepoint * depth
        for offset in range(depth):
            plane = planes[timepoint * depth + offset]
            if current and _instance_changes(current[-1], plane):
                chunks.append(Chunk(current, start, timepoint))
                current, start = [], timepoint * depth + offset
            current.append(plane)
        chunks.append(Chunk(current, start, timepoint))
    return chunks


def _instance_changes(previous: Plane, plane: Plane) -> bool:
    multi = previous.frame is not None or plane.frame is not None
    return multi and previous.instance is not plane.instance


def source_dataset(instance: Instance, notes: list[str] | None = None, values: bool = True) -> Dataset:
    """A shallow copy of the header that highdicom accepts and whose values an output may carry: text read as
    its declared character set says (else as ISO 8859-1, noted), every value within its VR's limits (cuts
    noted), the Type 2 attributes highdicom copies filled in empty, a Specific Character Set highdicom
    accepts. What was done is added to `notes` (keywords only, never values).

    With `values=False` the text is not checked nor cut: for sources whose values no output carries
    (highdicom copies patient and study from the first source only; the others give geometry and
    references), which made 1,500 slices' copies take 10 s."""
    header = instance.header
    copied = Dataset({tag: _own(element) for tag, element in header.items()})
    copied.file_meta = header.file_meta
    misread = vr.decode_strictly(copied, lambda tag: _raw_value(instance, tag)) if values else []
    if misread:
        log.warning("source %s: %s not valid in its declared character set %r; read as ISO 8859-1",
                    instance.label, ", ".join(misread), header.get("SpecificCharacterSet", ""))
    if notes is not None:
        notes.extend(f"{keyword} is not valid in the source's declared character set; read as ISO 8859-1"
                     for keyword in misread if f"{keyword} is not" not in " ".join(notes))
    for keyword in _TYPE2_EMPTY:
        if keyword not in copied:
            setattr(copied, keyword, "")
    if header.get("SpecificCharacterSet", "") not in ("", "ISO_IR 6", "ISO_IR 192"):
        # Every text value decoded with the source's own character set, then the copied called UTF-8, as the
        # outputs are (export.part10): highdicom copies the values and checks the character set against a list
        # that lacks some DICOM allows ("\ISO 2022 IR 87", the usual Japanese form, or ISO 2022 IR 149).
        copied.decode()
        copied.SpecificCharacterSet = "ISO_IR 192"
    cut = vr.clamp(copied) if values else []  # after decoding: values set again as text, written in UTF-8
    if notes is not None:
        notes.extend(f"{keyword} was longer than its VR allows; cut" for keyword in cut
                     if f"{keyword} was longer" not in " ".join(notes))
    return copied



def _own(element):
    """An element the copy may change without changing the header (Dataset(header) shares the header's
    elements, and decode() changes them in place): raw ones are immutable, decoded ones are copied, a
    sequence with its items."""
    if not isinstance(element, DataElement):
        return element
    return copy.deepcopy(element) if element.VR == "SQ" else copy.copy(element)


def _raw_value(instance: Instance, tag) -> bytes | None:
    """The bytes of one element as stored, read again from the instance's file (not decoded)."""
    with instance.open() as handle:
        element = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=[tag]).get_item(tag)
    return None if element is None or isinstance(element, DataElement) else bytes(element.value)


def frame_position(dataset: Dataset, frame: int, label: str) -> list[float]:
    """ImagePositionPatient of a frame (1-based) of an enhanced multi-frame image (`label`: how messages name
    it), from its functional groups only: a position for the whole instance is no frame's."""
    position = frame_attribute(dataset, frame - 1, "PlanePositionSequence", "ImagePositionPatient", top_level=False)
    if position is not None:
        return [float(v) for v in position]
    raise DicomExportError(
        f"the multi-frame instance of {label} gives no position for frame {frame} "
        "(PerFrameFunctionalGroupsSequence > PlanePositionSequence): a Segmentation needs the plane "
        "position of every frame"
    )


def plane_positions(dataset: Dataset, planes: list[Plane]) -> list[hd.PlanePositionSequence]:
    return [hd.PlanePositionSequence("PATIENT", frame_position(dataset, plane.frame, plane.instance.label))
            for plane in planes]


def check_geometry(planes: list[Plane], where: str) -> None:
    """Refuses planes a Segmentation cannot place, with a reason the model author can act on."""
    header = planes[0].instance.header
    spatial = "FrameOfReferenceUID" in header
    if not spatial and len(planes) > 1:
        raise DicomExportError(
            f"{where}: the source images have no FrameOfReferenceUID, so their {len(planes)} planes cannot be "
            "placed in one Segmentation (only a single image without a frame of reference can be segmented)"
        )
    if spatial and planes[0].frame is not None:
        if "SharedFunctionalGroupsSequence" not in header:
            raise DicomExportError(
                f"{where}: the multi-frame instance of {planes[0].instance.label} has no functional groups "
                "(SharedFunctionalGroupsSequence/PerFrameFunctionalGroupsSequence), so the position of each "
                "frame is unknown; send an enhanced multi-frame image or single-frame images"
            )
        for plane in planes:
            frame_position(header, plane.frame, plane.instance.label)
    elif spatial:
        missing = [i.label for i in {p.instance.sop_instance_uid: p.instance for p in planes}.values()
                   if "ImagePositionPatient" not in i.header or "ImageOrientationPatient" not in i.header]
        if missing:
            raise DicomExportError(
                f"{where}: {len(missing)} source image(s) have a frame of reference but no ImagePositionPatient/"
                f"ImageOrientationPatient (first: {missing[0]})"
            )
