"""Builds real DICOM studies with pydicom for the tests: several series, multi-frame, compressed.

Rows and columns differ in every series on purpose: a mask whose width and height (or depth) are
swapped then has the wrong length or the wrong shape, and a test notices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
ENHANCED_CT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # normal points along -x


@dataclass
class SeriesSpec:
    """One series: `count` instances of `frames` frames each, `rows` x `cols` pixels."""

    description: str
    rows: int
    cols: int
    count: int
    frames: int = 1
    modality: str = "CT"
    orientation: tuple = AXIAL
    spacing: float = 2.5
    transfer_syntax: UID = ExplicitVRLittleEndian
    series_uid: str = field(default_factory=generate_uid)


@dataclass
class InstanceRecord:
    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    rows: int
    cols: int
    frames: int
    position: tuple  # ImagePositionPatient of the (first) frame


@dataclass
class StudyRecord:
    folder: Path
    study_instance_uid: str
    series: list[SeriesSpec]
    instances: list[InstanceRecord]  # in the order written to disk (shuffled within a series)

    def by_series(self, series_uid: str) -> list[InstanceRecord]:
        return [i for i in self.instances if i.series_instance_uid == series_uid]

    def sorted_series(self, series_uid: str) -> list[InstanceRecord]:
        """Instances of a series ordered by position along the slice normal (the protocol's order)."""
        spec = next(s for s in self.series if s.series_uid == series_uid)
        normal = np.cross(spec.orientation[:3], spec.orientation[3:])
        return sorted(self.by_series(series_uid), key=lambda i: float(np.dot(normal, i.position)))


def _pixels(rows: int, cols: int, frames: int, seed: int) -> np.ndarray:
    """A gradient with a bright disc, so that a rendering has something to window."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = (xx * 7 + yy * 3 + seed * 11) % 400
    disc = ((yy - rows / 2) ** 2 + (xx - cols / 2) ** 2) < (min(rows, cols) / 4) ** 2
    image = (base + disc * 900).astype(np.uint16)
    if frames == 1:
        return image
    return np.stack([image + f * 5 for f in range(frames)]).astype(np.uint16)


def make_dataset(
    *,
    study_uid: str,
    spec: SeriesSpec,
    number: int,
    position: tuple,
    pixel_seed: int = 0,
    frames: int | None = None,
) -> Dataset:
    frames = spec.frames if frames is None else frames
    sop_class = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}[spec.modality]
    if frames > 1 and spec.modality == "CT":
        sop_class = ENHANCED_CT_STORAGE

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST-0001"
    ds.StudyDate = "20260101"
    ds.Modality = spec.modality
    ds.SeriesDescription = spec.description
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame-of-reference"])
    ds.ImageOrientationPatient = list(spec.orientation)
    ds.ImagePositionPatient = list(position)
    ds.PixelSpacing = [0.8, 0.7]
    ds.SliceThickness = spec.spacing
    ds.Rows = spec.rows
    ds.Columns = spec.cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if spec.modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = _pixels(spec.rows, spec.cols, frames, pixel_seed).tobytes()

    if spec.transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(spec.transfer_syntax)
    elif spec.transfer_syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def write_series(folder: Path, study_uid: str, spec: SeriesSpec, rng: random.Random) -> list[InstanceRecord]:
    normal = np.cross(spec.orientation[:3], spec.orientation[3:])
    records = []
    numbers = list(range(1, spec.count + 1))
    rng.shuffle(numbers)  # files on disk in an order that is not the anatomical one
    for number in numbers:
        position = tuple(float(v) for v in (np.array([-100.0, -80.0, 30.0]) + normal * spec.spacing * number))
        ds = make_dataset(study_uid=study_uid, spec=spec, number=number, position=position, pixel_seed=number)
        path = folder / f"{spec.description.replace(' ', '_')}_{rng.randrange(10**8):08d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        records.append(
            InstanceRecord(path, ds.SOPInstanceUID, spec.series_uid, spec.rows, spec.cols, spec.frames, position)
        )
    return records


def write_study(folder: Path, series: list[SeriesSpec], seed: int = 7) -> StudyRecord:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study_uid = generate_uid()
    instances: list[InstanceRecord] = []
    for spec in series:
        instances.extend(write_series(folder, study_uid, spec, rng))
    return StudyRecord(folder, study_uid, series, instances)


def standard_series() -> list[SeriesSpec]:
    """The study most tests use: an axial CT, a sagittal MR, a multi-frame CT and an RLE-compressed CT."""
    return [
        SeriesSpec("ct axial", rows=32, cols=48, count=6),
        SeriesSpec("mr sagittal", rows=40, cols=24, count=4, modality="MR", orientation=SAGITTAL),
        SeriesSpec("ct multiframe", rows=16, cols=20, count=1, frames=5),
        SeriesSpec("ct rle", rows=24, cols=28, count=3, transfer_syntax=RLELossless),
    ]


def write_standard_study(folder: Path) -> StudyRecord:
    return write_study(folder, standard_series())


def write_big_study(folder: Path, total_bytes: int, rows: int = 1024, cols: int = 1024) -> StudyRecord:
    """An axial CT whose files add up to at least `total_bytes` (uncompressed 16-bit pixels)."""
    count = total_bytes // (rows * cols * 2) + 1
    return write_study(folder, [SeriesSpec("big ct", rows=rows, cols=cols, count=count)])
