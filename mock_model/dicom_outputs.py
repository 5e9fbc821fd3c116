"""Real DICOM objects the mock model returns: a Secondary Capture and a Basic Text Structured Report.

Both copy the patient and study of the input, so a viewer files them with the study they describe.
"""

from __future__ import annotations

import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
           "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _base(source: Dataset, sop_class: str, modality: str, description: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword in _COPIED:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
    now = datetime.datetime.now()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = 9001
    ds.InstanceNumber = 1
    ds.SeriesDescription = description
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer = "arterys-grpc-bridge mock_model"
    return ds


def secondary_capture(source: Dataset, picture: np.ndarray, description: str) -> Dataset:
    """An 8-bit greyscale Secondary Capture Image of `picture` (height, width) uint8."""
    ds = _base(source, SECONDARY_CAPTURE, "OT", description)
    ds.ConversionType = "WSD"  # workstation: made by software, not scanned
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Rows, ds.Columns = picture.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(picture, dtype=np.uint8).tobytes()
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def structured_report(source: Dataset, findings: list[str], referenced: list[Dataset]) -> Dataset:
    """A Basic Text SR: a report container with one TEXT item per finding, citing the input instances."""
    ds = _base(source, BASIC_TEXT_SR, "SR", "Mock model report")
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    items = []
    for text in findings:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "TEXT"
        item.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
        item.TextValue = text
        items.append(item)
    ds.ContentSequence = Sequence(items)

    series: dict[str, list[Dataset]] = {}
    for header in referenced:
        reference = Dataset()
        reference.ReferencedSOPClassUID = header.SOPClassUID
        reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
        series.setdefault(str(header.SeriesInstanceUID), []).append(reference)
    study = Dataset()
    study.StudyInstanceUID = source.get("StudyInstanceUID", "")
    study.ReferencedSeriesSequence = Sequence([
        _series_reference(uid, refs) for uid, refs in series.items()
    ])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    return ds


def _series_reference(uid: str, references: list[Dataset]) -> Dataset:
    item = Dataset()
    item.SeriesInstanceUID = uid
    item.ReferencedSOPSequence = Sequence(references)
    return item
