"""`export_dicom`: an Arterys result made into Segmentations and one Comprehensive 3D SR (highdicom)."""


from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from pydicom.uid import generate_uid

from arterys_http.protocol import MASK_TYPES
from worker.dicom_export.device import Device
from worker.dicom_export.seg import SegOutput, SeriesUids, segmentations
from worker.dicom_export.sr import structured_report
from worker.study import Study

# highdicom logs every module it copies at INFO: a dozen lines per object, per request. Its warnings stay.
logging.getLogger("highdicom").setLevel(logging.WARNING)



def export_dicom(
    result_json: dict,
    binaries: Sequence,
    study: Study,
    *,
    keep_arterys: bool,
    model_name: str = "",
    model_version: str = "",
) -> tuple[dict, list[memoryview]]:
    """The result with DICOM parts appended: one SEG per mask part (per time point of a 4D mask), then one SR.

    Each new part is `{"label", "binary_type": "dicom", "dicom_output": {...}}` (plus the mask's
    dicomConformance), its binary a DICOM Part 10 file. With `keep_arterys=False` the mask parts are dropped;
    every other part and key stays. The inputs are not modified.

    Raises DicomExportError (the study cannot carry these objects, e.g. frames without positions).
    """
    device = Device(model_name, model_version)
    seg_series, sr_series_uid = SeriesUids(), generate_uid()
    parts = list(result_json.get("parts") or [])
    kept_parts, kept_binaries = [], []
    segs: list[tuple[dict, SegOutput]] = []
    for index, (part, binary) in enumerate(zip(parts, binaries, strict=True)):
        if part.get("binary_type") not in MASK_TYPES:
            kept_parts.append(part)
            kept_binaries.append(binary)
            continue
        if keep_arterys:
            kept_parts.append(part)
            kept_binaries.append(binary)
        where = f"parts[{index}] ({part.get('label')!r})"
        for seg in segmentations(part, binary, study, device, seg_series, len(segs) + 1, where):
            segs.append((part, seg))

    new_parts, new_binaries = [], []
    for part, seg in segs:
        entry = {"label": seg.label, "binary_type": "dicom", "dicom_output": {
            "modality": "SEG",
            "SOPInstanceUID": seg.dataset.SOPInstanceUID,
            "SeriesInstanceUID": seg.dataset.SeriesInstanceUID,
            "segmentation_type": seg.dataset.SegmentationType,
            "segments": {str(s.number): s.label for s in seg.segments},
            "source": seg.reference,
        }}
        if "dicomConformance" in part:
            entry["dicomConformance"] = part["dicomConformance"]
        new_parts.append(entry)
        new_binaries.append(part10(seg.dataset))

    report = structured_report(result_json, [seg for _, seg in segs], study, device, sr_series_uid)
    if report is not None:
        new_parts.append({"label": "measurement report", "binary_type": "dicom", "dicom_output": {
            "modality": "SR",
            "SOPInstanceUID": report.SOPInstanceUID,
            "SeriesInstanceUID": sr_series_uid,
            "template": "TID 1500",
        }})
        new_binaries.append(part10(report))

    out = dict(result_json)
    out["parts"] = kept_parts + new_parts
    return out, kept_binaries + new_binaries


def part10(dataset) -> memoryview:
    """A DICOM Part 10 file (preamble, 'DICM', file meta) in memory, its text declared UTF-8 (ISO_IR 192): a
    model's labels may use any character, and values copied from the source (patient name, descriptions)
    are re-encoded from their decoded form."""
    dataset.SpecificCharacterSet = "ISO_IR 192"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getbuffer()
