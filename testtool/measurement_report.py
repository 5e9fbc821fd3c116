"""A TID 1500 Measurement Report listed group by group, its image regions drawn like boxes and lines.

Why: the report is where boxes, lengths and classifications go when an answer is DICOM, and a model author
must see that each group says what the Arterys JSON said and points at the right image. Each measurement
group gives its tracking identifier, finding, measurements with units, qualitative evaluations and what it
references. Regions on an input image are drawn in SR_COLOR: a closed axis-aligned POLYLINE of 5 points (a
box, as the worker writes one) like a bounding box, other polylines as lines, lengths' SCOORD lines with
their value; SCOORD3D lines are projected onto the image the measurement names. Anything else is listed,
with a note saying why it is not drawn.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom

from testtool.dicom_output_info import SR_CLASSES, DicomOutputs, GroupInfo, Region, ReportInfo
from testtool.findings import Box, Measurement, world_to_pixel
from testtool.study import InputImage

SR_COLOR = (255, 128, 0)  # orange: told apart from the Arterys boxes (yellow) and lines (cyan)
# highdicom lists a group's Finding and Finding category among its qualitative evaluations; they are shown apart.
FINDING_CONCEPTS = ("121071", "276214006")  # DCM Finding, SCT Finding category
TEMPLATES = (
    ("TID 1411 volumetric ROI", "get_volumetric_roi_measurement_groups"),
    ("TID 1410 planar ROI", "get_planar_roi_measurement_groups"),
    ("TID 1501 measurements", "get_image_measurement_groups"),
)


def read_report(part: int, dataset: pydicom.Dataset, by_sop: dict[str, InputImage], out: DicomOutputs) -> None:
    name = f"part {part} (SR)"
    try:
        report = getattr(hd.sr, SR_CLASSES[dataset.SOPClassUID]).from_dataset(dataset, copy=False).content
    except Exception as exc:  # noqa: BLE001 - not TID 1500, or broken: listed as a note
        out.notes.append(f"{name}: not read as a TID 1500 measurement report ({exc})")
        return
    if not isinstance(report, hd.sr.MeasurementReport):
        return  # another template (a text report): a file for the archive, as before
    reader = _Reader(name, by_sop, out)
    groups = []
    for template, getter in TEMPLATES:
        for number, group in enumerate(getattr(report, getter)(), start=1):
            try:
                groups.append(reader.group(template, group))
            except Exception as exc:  # noqa: BLE001 - one odd group must not hide the others
                out.notes.append(f"{name}: {template} group {number} cannot be read ({exc}); not listed")
    title = dataset.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in dataset else "SR"
    out.reports.append(ReportInfo(part, str(dataset.SOPInstanceUID), str(title), groups))


class _Reader:
    def __init__(self, name: str, by_sop: dict[str, InputImage], out: DicomOutputs) -> None:
        self.name, self.by_sop, self.out = name, by_sop, out
        self.segments = {(s.sop_instance_uid, segment.number): (s.part, segment.label)
                         for s in out.segmentations for segment in s.segments}

    def group(self, template: str, group) -> GroupInfo:
        label = str(group.tracking_identifier or "")
        finding = _meaning(group.finding_type)
        if group.finding_category is not None:
            finding += f" ({_meaning(group.finding_category)})"
        regions: list[Region] = []
        if template.startswith("TID 1411"):
            regions += self.segment(group.referenced_segment)
        elif template.startswith("TID 1410") and group.roi is not None:
            regions.append(self.region(group.roi, label))
        measurements = []
        for measurement in group.get_measurements():
            text = f"{_meaning(measurement.name)}: {_number(measurement.value)}{_unit(measurement.unit)}"
            measurements.append(text)
            for coordinates in measurement.referenced_coordinates or []:
                regions.append(self.line(coordinates, measurement, label, text.split(": ", 1)[1]))
            if not measurement.referenced_coordinates and measurement.referenced_images:
                uid = measurement.referenced_images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                regions.append(Region(f"measured on image {uid}, without coordinates"))
        evaluations = [f"{_meaning(e.name)}: {_meaning(e.value)}" for e in group.get_qualitative_evaluations()
                       if getattr(e.name, "value", "") not in FINDING_CONCEPTS]
        sources = getattr(group, "source_images", None) or []
        if sources:
            regions.append(Region(f"source images: {len(sources)} instance(s)"))
        return GroupInfo(template, label, str(group.tracking_uid or ""), finding, measurements, evaluations, regions)

    def segment(self, reference) -> list[Region]:
        if reference is None:
            return []
        uid = str(reference.referenced_sop_instance_uid)
        out = []
        for number in reference.referenced_segment_numbers or []:
            part, label = self.segments.get((uid, int(number)), (None, None))
            where = f"the SEG of part {part}" if part else f"SEG {uid} (not in this answer)"
            out.append(Region(f"segment {number}" + (f" ({label})" if label else "") + f" of {where}"))
        return out

    def region(self, roi, label: str) -> Region:
        graphic = str(getattr(roi.graphic_type, "value", roi.graphic_type))
        if _value_type(roi) != "SCOORD":
            return Region(f"{graphic} in 3D (SCOORD3D): listed, not drawn")
        image, frame, where = self.image(roi.ContentSequence[0].ReferencedSOPSequence[0])
        points = np.asarray(roi.value, dtype=float).reshape(-1, 2)
        text = f"{graphic} {_points(points)} on {where}"
        if image is None:
            return Region(text)
        key = (image.sop_instance_uid, frame)
        box = _box(points) if graphic == "POLYLINE" else None
        if box is not None:
            self.out.findings[key].append(Box(box[0], box[1], label, SR_COLOR))
        elif graphic in ("POLYLINE", "POLYGON") and len(points) >= 2:
            closed = np.vstack([points, points[:1]]) if graphic == "POLYGON" else points
            for index, (start, end) in enumerate(zip(closed[:-1], closed[1:], strict=True)):
                self.out.findings[key].append(Measurement(_xy(start), _xy(end), label if index == 0 else "", "",
                                                          SR_COLOR))
        else:
            self.out.notes.append(f"{self.name}: the {graphic} region of {label!r} is listed, not drawn")
            return Region(text)
        return Region(text, *key)

    def line(self, coordinates, measurement, label: str, value: str) -> Region:
        points = np.asarray(coordinates.value, dtype=float)
        graphic = str(getattr(coordinates.graphic_type, "value", coordinates.graphic_type))
        if _value_type(coordinates) == "SCOORD3D":
            images = measurement.referenced_images or []
            if not images:
                return Region(f"{graphic} {_points(points)} (patient mm), on no image")
            image, frame, where = self.image(images[0].ReferencedSOPSequence[0])
            text = f"{graphic} {_points(points)} (patient mm) projected onto {where}"
            placed = None if image is None else [world_to_pixel(image, frame, p) for p in points]
            points = None if placed is None or None in placed else np.asarray(placed)
        else:
            image, frame, where = self.image(coordinates.ContentSequence[0].ReferencedSOPSequence[0])
            text = f"{graphic} {_points(points)} on {where}"
        if image is None or points is None or len(points) < 2:
            return Region(text)
        key = (image.sop_instance_uid, frame)
        for index, (start, end) in enumerate(zip(points[:-1], points[1:], strict=True)):
            self.out.findings[key].append(Measurement(_xy(start), _xy(end), label if index == 0 else "",
                                                      value if index == 0 else "", SR_COLOR))
        return Region(text, *key)

    def image(self, reference) -> tuple[InputImage | None, int, str]:
        """(input image or None, 0-based frame, words) for a Referenced SOP Sequence item."""
        uid = str(reference.ReferencedSOPInstanceUID)
        numbers = reference.get("ReferencedFrameNumber")
        number = int(numbers[0] if isinstance(numbers, (list, pydicom.multival.MultiValue)) else numbers or 1)
        image = self.by_sop.get(uid)
        where = f"image {uid}" + (f" frame {number}" if numbers is not None else "")
        if image is None:
            self.out.notes.append(f"{self.name}: {where} is not an input image; not drawn")
            return None, 0, where + " (not an input image)"
        if not 0 < number <= image.frames:
            self.out.notes.append(f"{self.name}: {where}: the image has {image.frames} frame(s); not drawn")
            return None, 0, where
        return image, number - 1, where


def _box(points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """(top_left, bottom_right) when the closed polyline is an axis-aligned rectangle, else None."""
    if len(points) != 5 or not np.allclose(points[0], points[-1]):
        return None
    xs, ys = sorted(set(points[:4, 0])), sorted(set(points[:4, 1]))
    if len(xs) != 2 or len(ys) != 2 or any(np.allclose(points[k], points[k + 1]) for k in range(4)):
        return None
    if any(points[k, 0] != points[k + 1, 0] and points[k, 1] != points[k + 1, 1] for k in range(4)):
        return None  # a diagonal edge: not a box
    return (float(xs[0]), float(ys[0])), (float(xs[1]), float(ys[1]))


def _xy(point) -> tuple[float, float]:
    return float(point[0]), float(point[1])


def _value_type(item) -> str:
    return str(getattr(item.value_type, "value", item.value_type))


def _meaning(code) -> str:
    return "" if code is None else str(getattr(code, "meaning", code))


def _unit(code) -> str:
    value = str(getattr(code, "value", "") or "")
    return "" if value in ("", "1") else f" {value}"  # UCUM "1": no units


def _number(value) -> str:
    return f"{float(value):.6g}"


def _points(points: np.ndarray) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in point) + "]" for point in points.tolist()) + "]"
