"""The answer's DICOM outputs read back as a PACS would: what each Segmentation and TID 1500 report holds.

Why the tool reads them: a worker asked for `output_formats: ["dicom"]` answers with DICOM Segmentations
and TID 1500 reports (Comprehensive 3D SRs) instead of the Arterys masks (docs/dicom-outputs.md), and a
model author must see them drawn as surely as the masks. Segmentations become mask findings
(testtool.segmentation), the reports' measurement groups become a list plus boxes and lines on the images
they reference (testtool.measurement_report); both go through the same drawing as the Arterys findings,
and what they hold is listed (testtool.dicom_output_info). Other DICOM outputs (secondary captures, text
reports) stay files for the archive, as before. Whatever cannot be read or placed becomes a note, never an
exception.
"""

from __future__ import annotations

import io

import pydicom

from arterys_http.protocol import DICOM_TYPES
from testtool.dicom_output_info import SEGMENTATION_STORAGE, SR_CLASSES, DicomOutputs
from testtool.findings import FindingMap
from testtool.study import LoadedStudy


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
