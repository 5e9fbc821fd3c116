"""`--make-sample-study DIR`: a small CT series of a body-shaped phantom, to try the tool without patient data.

24 axial slices of 128 x 128 pixels (2.5 mm pixels, 2.5 mm apart): air around a body of fat and muscle,
a spine and an aorta, two lungs in the upper slices, the liver and the kidneys in the lower ones, each at
a typical Hounsfield value with a little noise, so that a window shows anatomy and a threshold model (for
instance the liver at 55 to 75 HU) finds an organ. The same call writes the same files, UIDs included, so
an answer can be compared between runs. Stored as every CT scanner does: int16 with RescaleIntercept
-1024, a soft-tissue window, Part 10 files with explicit VR little endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROWS = COLUMNS = 128
SLICES = 24
SPACING_MM = 2.5
INTERCEPT = -1024
SEED = "arterys-grpc-bridge sample study"

# Hounsfield units of each tissue (typical values); the liver sits alone between 55 and 75 HU.
HU = {"air": -1000, "lung": -850, "fat": -100, "muscle": 40, "liver": 65, "kidney": 30, "aorta": 180,
      "bone": 700}


@dataclass(frozen=True)
class SampleStudy:
    folder: Path
    files: list[Path]
    study_instance_uid: str
    series_instance_uid: str


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[SEED, *map(str, parts)])


def _ellipse(yy, xx, centre, radii) -> np.ndarray:
    return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0


def phantom_slice(index: int, rng: np.random.Generator) -> np.ndarray:
    """Hounsfield units of slice `index` (0 = the lowest, towards the feet)."""
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS].astype(float)
    hu = np.full((ROWS, COLUMNS), HU["air"], dtype=float)
    hu[_ellipse(yy, xx, (66, 64), (40, 56))] = HU["fat"]
    hu[_ellipse(yy, xx, (66, 64), (34, 50))] = HU["muscle"]
    upper = index / (SLICES - 1)  # 0 at the feet, 1 at the head
    if upper > 0.55:  # chest: two lungs
        for column in (40, 88):
            hu[_ellipse(yy, xx, (60, column), (22, 17))] = HU["lung"]
    else:  # abdomen: the liver on the patient's right (the image's left), kidneys beside the spine
        grow = 1.0 - abs(upper - 0.35) * 1.6
        hu[_ellipse(yy, xx, (58, 44), (22 * grow, 24 * grow))] = HU["liver"]
        if upper < 0.4:
            for column in (44, 84):
                hu[_ellipse(yy, xx, (84, column), (7, 5))] = HU["kidney"]
    hu[_ellipse(yy, xx, (78, 64), (5, 5))] = HU["aorta"]
    hu[_ellipse(yy, xx, (92, 64), (8, 8))] = HU["bone"]
    return hu + rng.normal(0.0, 3.0, hu.shape)


def _dataset(index: int, pixels: np.ndarray, study_uid: str, series_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = _uid("instance", index)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = _uid("frame of reference")
    ds.PatientName, ds.PatientID, ds.PatientSex = "Sample^Phantom", "SAMPLE-0001", "O"
    ds.StudyDate = ds.SeriesDate = "20240101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyID, ds.AccessionNumber, ds.StudyDescription = "1", "SAMPLE1", "Sample study (phantom)"
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 1, "Phantom abdomen and chest, 2.5 mm"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-COLUMNS * SPACING_MM / 2, -ROWS * SPACING_MM / 2, index * SPACING_MM]
    ds.SliceLocation = index * SPACING_MM
    ds.PixelSpacing, ds.SliceThickness = [SPACING_MM, SPACING_MM], SPACING_MM
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = pixels.tobytes()
    return ds


def write_sample_study(folder: Path) -> SampleStudy:
    """Writes the series into `folder`/CT (created), one file per slice; returns what it wrote."""
    target = Path(folder) / "CT"
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    study_uid, series_uid = _uid("study"), _uid("series")
    files = []
    for index in range(SLICES):
        stored = np.round(phantom_slice(index, rng) - INTERCEPT).astype(np.int16)
        path = target / f"slice_{index + 1:03d}.dcm"
        _dataset(index, stored, study_uid, series_uid).save_as(path, enforce_file_format=True)
        files.append(path)
    return SampleStudy(Path(folder), files, study_uid, series_uid)
