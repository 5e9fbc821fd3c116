"""What the test tool learns from an answer's DICOM outputs: segmentations, reports and their groups.

Filled by testtool.segmentation and testtool.measurement_report (which read the objects with highdicom) for
testtool.dicom_outputs, and shown by the report; a module of its own so that the readers and the report
need not import each other.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from testtool.findings import FindingMap
from testtool.overlay import DISTINCT_COLORS, Color

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
