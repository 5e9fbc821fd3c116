"""DICOM outputs a PACS stores and OHIF shows, made from an Arterys result: Segmentations (one per series)
and up to two Comprehensive 3D SRs (the measurement report and the findings report).

The worker calls `export_dicom` after a result has been converted and checked, when the request's
`output_formats` (see `output_formats`) includes "dicom". It needs only the result JSON, the mask bytes and
the study's headers, so typed models and ported handlers that return raw JSON get the same objects.
docs/dicom-outputs.md describes what each object holds.

The package itself imports only the format rules: highdicom (20 MB) is loaded the first time a request asks
for DICOM outputs, so a worker that never makes them does not carry it.
"""

from __future__ import annotations

from worker.serving.dicom_export.formats import (
    DEFAULT_OUTPUT_FORMATS,
    OUTPUT_FORMATS,
    UnknownOutputFormat,
    output_formats,
    parse_output_formats_flag,
)

__all__ = [
    "DEFAULT_OUTPUT_FORMATS", "OUTPUT_FORMATS", "DicomExportError", "UnknownOutputFormat", "export_dicom",
    "output_formats", "parse_output_formats_flag",
]


def __getattr__(name: str):
    if name == "export_dicom":
        from worker.serving.dicom_export.export import export_dicom

        return export_dicom
    if name == "DicomExportError":
        from worker.serving.dicom_export.sources import DicomExportError

        return DicomExportError
    raise AttributeError(f"module 'worker.serving.dicom_export' has no attribute {name!r}")
