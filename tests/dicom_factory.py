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


# ---------------------------------------------------------------------------------------------------
# Series whose order is hard: 4D, enhanced multi-frame, tilted, repeated positions. Each is written with
# the order the protocol expects (dicom_geometry.order), so that every consumer can be held to it.

# Double oblique: rows along (cos a, sin a, 0), columns tilted out of the axial plane by b. Its normal
# has x, y and z parts, so ordering by z or by instance number would not do.
TILTED = (0.866025, 0.5, 0.0, -0.321394, 0.556670, 0.766044)


@dataclass
class OrderCase:
    """One series on disk and the order the protocol expects for it."""

    name: str
    folder: Path
    series_uid: str
    expected: list[str]  # SOPInstanceUIDs in the protocol's order (time point, then along the normal)
    timepoints: int
    paths: list[Path]  # the files, in the (shuffled) order they were written

    def shuffled_paths(self, seed: int) -> list[Path]:
        paths = list(self.paths)
        random.Random(seed).shuffle(paths)
        return paths


def _unit_normal(orientation) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def _save(ds: Dataset, folder: Path, rng: random.Random) -> Path:
    # Random names: the order files are found in must not matter.
    path = folder / f"im_{rng.randrange(10**8):08d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_4d_series(folder: Path, *, positions: int = 3, timepoints: int = 4, orientation=AXIAL,
                    temporal: str = "TriggerTime", jitter: float = 0.0, seed: int = 11) -> OrderCase:
    """A cine: every position imaged at every time point. Instance numbers are shuffled, so they say
    nothing about time; `temporal` names the attribute that does ("TriggerTime",
    "TemporalPositionIdentifier", "AcquisitionTime"). `jitter` mm moves the positions of odd time points
    along the normal, as rounding in real headers does (it must stay below the position tolerance)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    spec = SeriesSpec("cine", rows=6, cols=9, count=1, modality="MR", orientation=orientation, spacing=4.0)
    study_uid = generate_uid()
    normal = _unit_normal(orientation)
    numbers = list(range(1, positions * timepoints + 1))
    rng.shuffle(numbers)
    slots = [(t, k) for t in range(timepoints) for k in range(positions)]
    written: dict[tuple[int, int], tuple[str, Path]] = {}
    for (t, k), number in zip(rng.sample(slots, len(slots)), numbers, strict=True):
        offset = spec.spacing * k + (jitter if t % 2 else 0.0)
        position = tuple(round(float(v), 6) for v in np.array([-20.0, 10.0, 5.0]) + normal * offset)
        ds = make_dataset(study_uid=study_uid, spec=spec, number=number, position=position, pixel_seed=t * 10 + k)
        if temporal == "TriggerTime":
            ds.TriggerTime = 45.0 * t + 0.5 * k  # real cines trigger each slice a little later
        elif temporal == "TemporalPositionIdentifier":
            ds.TemporalPositionIdentifier = t + 1
        elif temporal == "AcquisitionTime":
            ds.AcquisitionDate = "20260101"
            ds.AcquisitionTime = _clock(10 * 3600 + 57 + 3 * t + 0.1 * k)  # crosses a minute: 10:00:57 -> 10:01:06
        ds.ImageComments = f"t={t} k={k}"
        written[(t, k)] = (ds.SOPInstanceUID, _save(ds, folder, rng))
    expected = [written[(t, k)][0] for t in range(timepoints) for k in range(positions)]
    return OrderCase(f"4d-{temporal}", folder, spec.series_uid, expected, timepoints,
                     [path for _, path in written.values()])


def _clock(seconds: float) -> str:
    """A DICOM TM value (HHMMSS.FFFFFF) for `seconds` after midnight."""
    whole = int(seconds)
    return f"{whole // 3600:02d}{whole // 60 % 60:02d}{whole % 60:02d}.{round((seconds - whole) * 1e6):06d}"


def write_enhanced_series(folder: Path, *, stacks: int = 3, frames: int = 4, timepoints: int = 1,
                          orientation=TILTED, shear: float = 1.5, seed: int = 12) -> OrderCase:
    """Enhanced CT instances of `frames` frames each: geometry only in functional groups (per-frame
    position, shared orientation and spacing), none at the top level. With timepoints == 1 the stacks
    follow each other along the normal; with timepoints > 1 each instance is the whole volume at one
    time point (FrameContentSequence.TemporalPositionIndex). Instance numbers run against the expected
    order. Each frame is shifted in-plane by `shear` mm per slice (as gantry tilt does), so using the
    first frame's position for every frame would misplace world coordinates."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    spec = SeriesSpec("enhanced", rows=10, cols=14, count=1, frames=frames, orientation=orientation, spacing=3.0)
    study_uid = generate_uid()
    normal = _unit_normal(orientation)
    row_direction = np.asarray(orientation[:3])
    instances = stacks if timepoints == 1 else timepoints
    written = []
    for slot in range(instances):
        first = slot * frames if timepoints == 1 else 0
        ds = make_dataset(study_uid=study_uid, spec=spec, number=instances - slot, position=(0.0, 0.0, 0.0),
                          pixel_seed=slot)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            delattr(ds, keyword)
        shared = Dataset()
        shared.PlaneOrientationSequence = [Dataset()]
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = list(orientation)
        shared.PixelMeasuresSequence = [Dataset()]
        shared.PixelMeasuresSequence[0].PixelSpacing = [0.8, 0.7]
        shared.PixelMeasuresSequence[0].SliceThickness = spec.spacing
        ds.SharedFunctionalGroupsSequence = [shared]
        per_frame = []
        for frame in range(frames):
            item = Dataset()
            item.PlanePositionSequence = [Dataset()]
            item.PlanePositionSequence[0].ImagePositionPatient = [
                round(float(v), 6) for v in enhanced_frame_position(first + frame, normal, row_direction, spec, shear)]
            item.FrameContentSequence = [Dataset()]
            item.FrameContentSequence[0].TemporalPositionIndex = slot + 1 if timepoints > 1 else 1
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = per_frame
        ds.ImageComments = f"slot={slot}"
        written.append((ds.SOPInstanceUID, _save(ds, folder, rng)))
    expected = [uid for uid, _ in written]
    return OrderCase(f"enhanced-{timepoints}t", folder, spec.series_uid, expected, timepoints,
                     [path for _, path in written])


def enhanced_frame_position(slice_number: int, normal, row_direction, spec: SeriesSpec, shear: float) -> np.ndarray:
    """ImagePositionPatient of slice `slice_number` of write_enhanced_series."""
    return np.array([30.0, -12.0, 40.0]) + normal * spec.spacing * slice_number + row_direction * shear * slice_number


def write_repeated_positions(folder: Path, *, regular: bool, seed: int = 13) -> OrderCase:
    """Axial slices where positions repeat, without any temporal attribute. regular=False: one slice
    sent twice (no time points: the two stay together, by instance number); regular=True: every slice
    twice (two time points, told apart by instance number alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    spec = SeriesSpec("repeats", rows=8, cols=12, count=1, spacing=2.0)
    study_uid = generate_uid()
    slots = [(k, 0) for k in range(4)] + ([(k, 1) for k in range(4)] if regular else [(2, 1)])
    numbers = {slot: number for number, slot in enumerate(sorted(slots, key=lambda s: (s[1], -s[0])), start=1)}
    written = {}
    for k, copy in rng.sample(slots, len(slots)):
        position = (0.0, 0.0, spec.spacing * k)
        ds = make_dataset(study_uid=study_uid, spec=spec, number=numbers[(k, copy)], position=position,
                          pixel_seed=k)
        written[(k, copy)] = (ds.SOPInstanceUID, _save(ds, folder, rng))
    if regular:
        order = [(k, copy) for copy in (0, 1) for k in range(4)]
    else:
        order = [(0, 0), (1, 0), *sorted([(2, 0), (2, 1)], key=lambda s: numbers[s]), (3, 0)]
    return OrderCase(f"repeats-{'regular' if regular else 'single'}", folder, spec.series_uid,
                     [written[slot][0] for slot in order], 2 if regular else 1,
                     [path for _, path in written.values()])
