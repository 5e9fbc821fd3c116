"""Input studies for the DICOM export tests, built with tests/dicom_factory.py, and checks that they are valid.

tests/dicom_factory.py writes its multi-frame series as an Enhanced CT without functional groups, which no
PACS would accept and whose frames have no positions; a Segmentation must place every frame, so these tests
use an Enhanced CT that highdicom converts from real single-frame slices (Legacy Converted Enhanced CT, with
per-frame functional groups). 4D input: the same slice positions written again for each time point.
"""

from __future__ import annotations

import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import RLELossless, generate_uid

from tests import dicom_factory as factory
from worker.sdk.study import Study
from worker.serving.instances import parse_instance


def _tilted(about_y: float = 15.0, about_x: float = 20.0) -> tuple:
    """Axial cosines rotated about y then x: an oblique plane whose normal is no patient axis."""
    a, b = np.radians(about_y), np.radians(about_x)
    rotate_y = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rotate_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rotation = rotate_x @ rotate_y
    return tuple(round(float(v), 8) for v in (*rotation[:, 0], *rotation[:, 1]))


TILTED = _tilted()


def as_study(paths: list[Path], request: dict | None = None) -> Study:
    instances = [parse_instance(index, Path(path)) for index, path in enumerate(paths)]
    return Study(request=request or {}, command="test", input_hash="0" * 64, instances=instances)


def _positions(spec: factory.SeriesSpec, count: int) -> list[tuple]:
    normal = np.cross(spec.orientation[:3], spec.orientation[3:])
    return [tuple(float(v) for v in np.array([-100.0, -80.0, 30.0]) + normal * spec.spacing * n)
            for n in range(1, count + 1)]


def write_enhanced_ct(folder: Path, study_uid: str, rows: int = 18, cols: int = 22, frames: int = 5) -> Path:
    """A Legacy Converted Enhanced CT of `frames` frames, with per-frame positions (a real multi-frame input)."""
    spec = factory.SeriesSpec("ct enhanced", rows=rows, cols=cols, count=frames)
    legacy = [
        factory.make_dataset(study_uid=study_uid, spec=spec, number=n, position=p, pixel_seed=n)
        for n, p in enumerate(_positions(spec, frames), start=1)
    ]
    for ds in legacy:  # highdicom copies these Type 2 attributes from the slices
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyTime",
                        "ReferringPhysicianName", "Manufacturer"):
            setattr(ds, keyword, "")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # FrameType is derived from it
        ds.SeriesInstanceUID = spec.series_uid
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy, series_instance_uid=spec.series_uid, series_number=5, sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    # highdicom names the converted slices, which are not part of the study: a reference to nothing.
    del enhanced.ReferencedSeriesSequence
    enhanced.Laterality = ""  # Type 2C in General Series; dciodvfy cannot tell whether a CT needs it
    path = folder / "enhanced_ct.dcm"
    enhanced.save_as(path, enforce_file_format=True)
    return path


def write_4d_series(folder: Path, study_uid: str, timepoints: int = 3, depth: int = 4) -> list[Path]:
    """An MR series seen `timepoints` times at the same `depth` positions (files in shuffled order)."""
    spec = factory.SeriesSpec("mr 4d", rows=20, cols=26, count=depth, modality="MR", spacing=3.0)
    paths = []
    order = list(range(timepoints * depth))
    random.Random(3).shuffle(order)
    positions = _positions(spec, depth)
    for k in order:
        t, z = divmod(k, depth)
        ds = factory.make_dataset(study_uid=study_uid, spec=spec, number=k + 1, position=positions[z],
                                  pixel_seed=k)
        ds.TemporalPositionIdentifier = t + 1
        ds.NumberOfTemporalPositions = timepoints
        path = folder / f"mr4d_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_export_study(folder: Path) -> tuple[Study, factory.StudyRecord]:
    """Several series: axial CT, sagittal MR, tilted CT (RLE), an enhanced multi-frame CT and a 4D MR."""
    record = factory.write_study(folder, [
        factory.SeriesSpec("ct axial", rows=32, cols=48, count=6),
        factory.SeriesSpec("mr sagittal", rows=40, cols=24, count=4, modality="MR",
                           orientation=factory.SAGITTAL),
        factory.SeriesSpec("ct tilted", rows=24, cols=28, count=3, orientation=TILTED, transfer_syntax=RLELossless),
    ])
    paths = [i.path for i in record.instances]
    paths.append(write_enhanced_ct(folder, record.study_instance_uid))
    paths += write_4d_series(folder, record.study_instance_uid)
    return as_study(paths), record


# ------------------------------------------------------------------------------------- the inputs are sound


def test_export_study_has_the_shapes_the_export_tests_rely_on(tmp_path):
    study, _ = write_export_study(tmp_path)
    shapes = {s.instances[0].header.SeriesDescription: s.mask_shape() for s in study.series}
    assert shapes == {
        "ct axial": (1, 6, 32, 48),
        "mr sagittal": (1, 4, 40, 24),
        "ct tilted": (1, 3, 24, 28),
        "ct enhanced (enhanced conversion)": (1, 5, 18, 22),  # highdicom's legacy conversion names it so
        "mr 4d": (3, 4, 20, 26),
    }
    enhanced = next(s for s in study.series if s.instances[0].frames > 1).instances[0]
    frames = enhanced.header.PerFrameFunctionalGroupsSequence
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
    assert len(set(z)) == 5  # five distinct positions: what a Segmentation copies


def test_enhanced_ct_input_is_valid_dicom(tmp_path):
    from tests.test_dicom_export import dciodvfy_errors  # one dciodvfy runner for every test

    path = write_enhanced_ct(tmp_path, generate_uid())
    assert dciodvfy_errors(path) == []
    assert pydicom.dcmread(path).pixel_array.shape == (5, 18, 22)


def test_dciodvfy_reports_errors_in_a_broken_file(tmp_path):
    """The validator check can fail: an enhanced CT without Rows (Type 1) is an error."""
    from tests.test_dicom_export import dciodvfy_errors

    path = write_enhanced_ct(tmp_path, generate_uid())
    ds = pydicom.dcmread(path)
    del ds.Rows
    ds.save_as(tmp_path / "broken.dcm")
    assert dciodvfy_errors(tmp_path / "broken.dcm")

