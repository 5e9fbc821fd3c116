"""The answer's DICOM outputs read back as a PACS would: what each Segmentation and TID 1500 report holds.

Why the tool reads them: a worker asked for `output_formats: ["dicom"]` answers with DICOM Segmentations
and TID 1500 reports (Comprehensive 3D SRs) instead of the Arterys masks (docs/dicom-outputs.md), and a
model author must see them drawn as surely as the masks. Segmentations become mask findings
(testtool.segmentation), the reports' measurement groups become a list plus boxes and lines on the images they reference
(testtool.measurement_report); both go through the same drawing as the Arterys findings. Other DICOM
outputs (secondary captures, text reports) stay files for the archive, as before. Whatever cannot be read
or placed becomes a note, never an exception.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field

import pydicom

from arterys_http.protocol import DICOM_TYPES
from testtool.findings import FindingMap
from testtool.overlay import DISTINCT_COLORS, Color
from testtool.study import LoadedStudy

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
# SR classes that can hold a TID 1500 Measurement Report (highdicom reads each with its own class).
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive3DSR",
    "1.2.840.10008.5.1.4.1.1.88.33": "ComprehensiveSR",
    "1.2.840.10008.5.1.4.1.1.88.22": "EnhancedSR",
}


@dataclass
class Segment:
    number: int
    label: str
    property_type: str  # the Segmented Property Type's meaning
    color: Color


@dataclass
class SegmentationInfo:
    part: int  # 1-based position in `parts`
    sop_instance_uid: str
    kind: str  # "BINARY" or "FRACTIONAL (PROBABILITY)"
    segments: list[Segment]
    source_series: str
    planes: int  # source frames of the study it is drawn on


@dataclass
class Region:
    """Where a group points: text, and the frame it is drawn on (None: not drawn, or no image)."""

    text: str
    sop_instance_uid: str | None = None
    frame: int | None = None  # 0-based


@dataclass
class GroupInfo:
    template: str  # "TID 1411 volumetric ROI", "TID 1410 planar ROI", "TID 1501 measurements"
    tracking_identifier: str
    tracking_uid: str
    finding: str  # finding type (and category)
    measurements: list[str]  # "Length: 13.3 mm"
    evaluations: list[str]  # "label: Normal"
    regions: list[Region]


@dataclass
class ReportInfo:
    part: int
    sop_instance_uid: str
    title: str  # the document title's meaning
    groups: list[GroupInfo]


@dataclass
class DicomOutputs:
    findings: FindingMap = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    segmentations: list[SegmentationInfo] = field(default_factory=list)
    reports: list[ReportInfo] = field(default_factory=list)
    colors: dict[str, Color] = field(default_factory=dict)  # one colour per segment label, across the answer

    def color(self, label: str) -> Color:
        if label not in self.colors:
            self.colors[label] = DISTINCT_COLORS[len(self.colors) % len(DISTINCT_COLORS)]
        return self.colors[label]


def read_dicom_outputs(study: LoadedStudy, result_json, binaries) -> DicomOutputs:
    """Every SEG and TID 1500 report of the answer: findings to draw, what to list, and notes."""
    from testtool.measurement_report import read_report  # these import highdicom: only when there is DICOM
    from testtool.segmentation import read_segmentation

    out = DicomOutputs()
    parts = result_json.get("parts") if isinstance(result_json, dict) else None
    if not isinstance(parts, list):
        return out
    datasets = []
    for number, (part, data) in enumerate(zip(parts, binaries, strict=False), start=1):
        if not isinstance(part, dict) or part.get("binary_type") not in DICOM_TYPES:
            continue
        try:
            datasets.append((number, pydicom.dcmread(io.BytesIO(bytes(data)))))
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
            out.notes.append(f"part {number}: not a readable DICOM file ({exc}); not drawn")
    by_sop = {image.sop_instance_uid: image for image in study.images}
    for number, dataset in datasets:  # SEGs first: the report's groups name their segments
        if dataset.get("SOPClassUID") == SEGMENTATION_STORAGE:
            read_segmentation(number, dataset, by_sop, out)
    for number, dataset in datasets:
        if dataset.get("SOPClassUID") in SR_CLASSES:
            read_report(number, dataset, by_sop, out)
    return out


def merge_findings(findings: FindingMap, extra: FindingMap) -> FindingMap:
    """The Arterys findings with the DICOM outputs' drawn after them on the same frames."""
    merged = {key: list(items) for key, items in findings.items()}
    for key, items in extra.items():
        merged.setdefault(key, []).extend(items)
    return merged
