"""`export_dicom`: an Arterys result made into Segmentations and TID 1500 reports (highdicom)."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from arterys_http.label_colours import label_colours, mask_labels
from arterys_http.protocol import MASK_TYPES
from worker.sdk.study import Study
from worker.serving.dicom_export.device import Device
from worker.serving.dicom_export.formats import fractional_asked
from worker.serving.dicom_export.seg import segmentations
from worker.serving.dicom_export.sr import structured_reports

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
    """The result with DICOM parts appended: one SEG per source unit (a series at one time point, or one
    multi-frame image), then up to two SRs (the measurement report and the findings report).

    Each new part is `{"label", "binary_type": "dicom", "dicom_output": {...}}` (plus the contributing masks'
    dicomConformance), its binary a DICOM Part 10 file. With `keep_arterys=False` the mask parts are dropped;
    every other part and key stays. The inputs are not modified.

    Raises DicomExportError (the study cannot carry these objects, e.g. frames without positions).
    """
    device = Device(model_name, model_version)
    parts = list(result_json.get("parts") or [])
    kept_parts, kept_binaries, masks = [], [], []
    for index, (part, binary) in enumerate(zip(parts, binaries, strict=True)):
        if part.get("binary_type") in MASK_TYPES:
            masks.append((index, part, binary))
            if not keep_arterys:
                continue
        kept_parts.append(part)
        kept_binaries.append(binary)

    # The colour of a label is the one the test tool draws it in: the same module, the same set of labels.
    colours = label_colours(mask_labels([part for _, part, _ in masks]))
    segs, absences = segmentations(masks, study, device, study.command or "", colours,
                                   fractional_asked(study.request))
    new_parts, new_binaries = [], []
    for seg in segs:
        output = {
            "modality": "SEG",
            "SOPInstanceUID": seg.dataset.SOPInstanceUID,
            "SeriesInstanceUID": seg.dataset.SeriesInstanceUID,
            "segmentation_type": seg.dataset.SegmentationType,
            "segments": {str(s.number): s.label for s in seg.segments},
            "source": seg.reference,
        }
        if seg.notes:
            output["notes"] = seg.notes
        entry = {"label": seg.label, "binary_type": "dicom", "dicom_output": output}
        if seg.conformance:
            entry["dicomConformance"] = seg.conformance
        new_parts.append(entry)
        new_binaries.append(part10(seg.dataset))

    for label, report, notes in structured_reports(result_json, segs, absences, study, device):
        output = {"modality": "SR", "SOPInstanceUID": report.SOPInstanceUID,
                  "SeriesInstanceUID": report.SeriesInstanceUID, "template": "TID 1500"}
        if notes:
            output["notes"] = notes
        new_parts.append({"label": label, "binary_type": "dicom", "dicom_output": output})
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
