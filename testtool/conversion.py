"""PNG/JPEG pictures -> DICOM Secondary Capture, because the bridge and the Arterys app only take DICOM.

Why: model authors often test with screenshots. Each folder of pictures becomes one series, numbered in
file-name order, with the patient and study of the DICOM files found beside them, so the request looks
like one study.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from testtool.display import round_to_uint8

SECONDARY_CAPTURE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")


def convert_folder(paths: list[Path], study_uid: str, series_number: int,
                   template: Dataset | None) -> tuple[list[tuple[Path, bytes]], list[tuple[Path, str]]]:
    """One secondary-capture series for the pictures of one folder, numbered in file-name order:
    ([(picture, DICOM bytes)], [(picture, why it was skipped)])."""
    series_uid = generate_uid()
    converted, problems = [], []
    for number, path in enumerate(sorted(paths, key=lambda p: p.name), start=1):
        try:
            data = secondary_capture_bytes(
                path, study_uid=study_uid, series_uid=series_uid, series_number=series_number,
                instance_number=number, template=template,
            )
        except Exception as exc:  # noqa: BLE001 - a corrupt picture is skipped, not fatal
            text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            problems.append((path, f"picture could not be converted to DICOM ({text})"))
            continue
        converted.append((path, data))
    return converted, problems


def secondary_capture_bytes(
    path: Path,
    *,
    study_uid: str,
    series_uid: str,
    series_number: int,
    instance_number: int,
    template: Dataset | None = None,
) -> bytes:
    """A PNG/JPEG as an 8-bit Secondary Capture file (MONOCHROME2 or RGB); patient data from `template`."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)  # what the author sees in a picture viewer
        pixels, photometric = _eight_bit(img)
    now = datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyID"):
        setattr(ds, keyword, template.get(keyword, "") if template is not None else "")
    ds.Modality = "OT"
    ds.ConversionType = "WSD"  # workstation: a picture, not a scanned film
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.SeriesDescription = f"pictures from {path.parent.name}"[:64]
    ds.DerivationDescription = f"converted by testtool from {path.name}"[:1024]
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _eight_bit(img: Image.Image) -> tuple[np.ndarray, str]:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(img, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if high <= 255 and low >= 0:
            return values.astype(np.uint8), "MONOCHROME2"
        scaled = (values - low) * 255.0 / (high - low) if high > low else np.zeros_like(values)
        return round_to_uint8(scaled), "MONOCHROME2"
    if img.mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8), "MONOCHROME2"
    return np.asarray(img.convert("RGB"), dtype=np.uint8), "RGB"
