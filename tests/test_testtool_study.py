"""testtool.study: which files are sent, in which order, and how their pixels are decoded and windowed."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from tests.dicom_factory import SAGITTAL, SeriesSpec, _pixels, make_dataset, write_standard_study, write_study
from testtool.conversion import SECONDARY_CAPTURE_STORAGE
from testtool.display import frame_pixels, to_display, window_linear
from testtool.loading import load_study
from worker.serving.errors import BadRequest
from worker.serving.instances import parse_instance


def _paths(images) -> list[Path]:
    return [image.path for image in images]


# ---------------------------------------------------------------------------------------------------
# Order


def test_nested_shuffled_study_is_sorted_along_the_slice_normal(tmp_path):
    record = write_standard_study(tmp_path / "export" / "dicom")
    # scatter files over nested folders whose names sort against the anatomical order
    for number, instance in enumerate(record.instances):
        target = tmp_path / "export" / f"z{number % 3}" / "deeper" / instance.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(instance.path, target)
        instance.path = target

    study = load_study(tmp_path)

    assert study.skipped == []
    assert study.study_instance_uid == record.study_instance_uid
    assert len(study.images) == len(record.instances)
    for spec in record.series:
        assert _paths(study.series[spec.series_uid]) == _paths(record.sorted_series(spec.series_uid))
    assert study.images == [image for images in study.series.values() for image in images]


def test_sagittal_series_follows_its_own_normal_not_z(tmp_path):
    record = write_study(tmp_path, [SeriesSpec("mr sagittal", rows=40, cols=24, count=5, modality="MR",
                                               orientation=SAGITTAL)])
    images = load_study(tmp_path).series[record.series[0].series_uid]

    xs = [image.position[0] for image in images]
    assert xs == sorted(xs, reverse=True)  # the normal points along -x
    assert [image.slice_index for image in images] == [0, 1, 2, 3, 4]
    assert [(image.rows, image.cols) for image in images] == [(40, 24)] * 5


def test_series_are_ordered_by_series_number_then_uid(tmp_path):
    specs = [SeriesSpec(f"s{n}", rows=8, cols=10, count=2) for n in range(4)]
    record = write_study(tmp_path, specs)
    numbers = {specs[0].series_uid: 7, specs[1].series_uid: 2, specs[2].series_uid: 2, specs[3].series_uid: 1}
    for instance in record.instances:
        ds = dcmread(instance.path)
        ds.SeriesNumber = numbers[instance.series_instance_uid]
        ds.save_as(instance.path)

    study = load_study(tmp_path)

    tied = sorted([specs[1].series_uid, specs[2].series_uid])
    assert list(study.series) == [specs[3].series_uid, *tied, specs[0].series_uid]


def test_loading_twice_gives_the_same_send_order(tmp_path):
    write_standard_study(tmp_path)
    first, second = load_study(tmp_path), load_study(tmp_path)
    assert [i.sop_instance_uid for i in first.images] == [i.sop_instance_uid for i in second.images]


def test_without_geometry_instance_number_then_sop_instance_uid_decide(tmp_path):
    """Ties are broken by the data, not by file names: the worker sees no file names (dicom_geometry.order)."""
    spec = SeriesSpec("scout", rows=8, cols=10, count=1)
    study_uid = generate_uid()
    uids = {}
    for name, number in [("c.dcm", 2), ("a.dcm", 3), ("b.dcm", 1), ("d.dcm", 3)]:
        ds = make_dataset(study_uid=study_uid, spec=spec, number=number, position=(0.0, 0.0, 0.0))
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.save_as(tmp_path / name, enforce_file_format=True)
        uids[name] = ds.SOPInstanceUID

    images = load_study(tmp_path).series[spec.series_uid]

    tied = sorted(["a.dcm", "d.dcm"], key=lambda name: uids[name])
    assert [image.source.name for image in images] == ["b.dcm", "c.dcm", *tied]
    assert [image.position for image in images] == [None] * 4
    assert [image.timepoint for image in images] == [0] * 4


# ---------------------------------------------------------------------------------------------------
# Time points


def _write_cine(folder: Path, positions: int, timepoints: int, *, trigger_times: bool = False,
                temporal_ids: bool = False, geometry: bool = True) -> SeriesSpec:
    """A series imaging each position at several time points; files and instance numbers shuffled."""
    spec = SeriesSpec("cine", rows=6, cols=9, count=1, modality="MR")
    study_uid = generate_uid()
    rng = random.Random(3)
    numbers = list(range(1, positions * timepoints + 1))
    rng.shuffle(numbers)  # instance numbers say nothing about time
    for index, (slot, number) in enumerate(zip(range(positions * timepoints), numbers, strict=True)):
        position, time = slot % positions, slot // positions
        ds = make_dataset(study_uid=study_uid, spec=spec, number=number,
                          position=(0.0, 0.0, 10.0 * position), pixel_seed=slot)
        if trigger_times:
            ds.TriggerTime = 40.0 * time + 0.1 * position  # slightly different per slice, as in real cines
        if temporal_ids:
            ds.TemporalPositionIdentifier = time + 1
        if not geometry:
            del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.ImageComments = f"position {position} time {time}"
        ds.save_as(folder / f"im{rng.randrange(10**6):06d}_{index}.dcm", enforce_file_format=True)
    return spec


def _position_and_time(image) -> tuple[int, int]:
    words = str(image.dataset.ImageComments).split()
    return int(words[1]), int(words[3])


def test_repeated_positions_become_time_points_in_timepoint_major_order(tmp_path):
    spec = _write_cine(tmp_path, positions=3, timepoints=2, trigger_times=True)
    study = load_study(tmp_path)
    images = study.series[spec.series_uid]

    assert [_position_and_time(i) for i in images] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    assert [(i.timepoint, i.slice_index) for i in images] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert study.series_shape(spec.series_uid) == (2, 3)


def test_temporal_position_identifier_without_geometry(tmp_path):
    spec = _write_cine(tmp_path, positions=2, timepoints=3, temporal_ids=True, geometry=False)
    study = load_study(tmp_path)
    images = study.series[spec.series_uid]

    assert [i.timepoint for i in images] == [0, 0, 1, 1, 2, 2]
    assert [i.slice_index for i in images] == [0, 1, 0, 1, 0, 1]
    assert study.series_shape(spec.series_uid) == (3, 2)


def test_distinct_positions_are_one_time_point(tmp_path):
    record = write_study(tmp_path, [SeriesSpec("ct", rows=8, cols=10, count=4)])
    study = load_study(tmp_path)
    assert study.series_shape(record.series[0].series_uid) == (1, 4)


# ---------------------------------------------------------------------------------------------------
# Pixels: every transfer syntax the installed plugins decode


def test_multiframe_frames_decode_one_by_one(tmp_path):
    record = write_study(tmp_path, [SeriesSpec("ct multiframe", rows=16, cols=20, count=1, frames=5)])
    (image,) = load_study(tmp_path).images
    expected = _pixels(16, 20, 5, seed=1)

    assert image.frames == 5
    for frame in range(5):
        np.testing.assert_array_equal(frame_pixels(image, frame), expected[frame])
    with pytest.raises(IndexError):
        frame_pixels(image, 5)
    assert image.read_bytes() == record.instances[0].path.read_bytes()


@pytest.mark.parametrize("syntax, rows, cols", [(RLELossless, 24, 28), (JPEG2000Lossless, 40, 36)])
def test_lossless_compressed_files_decode_exactly(tmp_path, syntax, rows, cols):
    write_study(tmp_path, [SeriesSpec("compressed", rows=rows, cols=cols, count=3, transfer_syntax=syntax)])
    study = load_study(tmp_path)

    assert len(study.images) == 3
    for image in study.images:
        assert image.dataset.file_meta.TransferSyntaxUID == syntax
        pixels = frame_pixels(image)
        assert pixels.shape == (rows, cols)
        np.testing.assert_array_equal(pixels, _pixels(rows, cols, 1, seed=int(image.dataset.InstanceNumber)))


def test_jpeg_baseline_dicom_decodes(tmp_path):
    yy, xx = np.mgrid[0:32, 0:40]
    gradient = (xx * 5 + yy * 2).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(gradient).save(encoded, "JPEG", quality=95)
    ds = _minimal_image(rows=32, cols=40, bits=8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([encoded.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm", enforce_file_format=True)

    (image,) = load_study(tmp_path).images
    pixels = frame_pixels(image)

    assert pixels.shape == (32, 40)
    assert np.abs(pixels.astype(int) - gradient).max() <= 6  # lossy, but the same picture


def _minimal_image(rows: int, cols: int, bits: int = 16) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def test_files_the_worker_refuses_are_left_out_with_a_note(tmp_path):
    """The worker's own rule (dicom_geometry.acceptance) decides: a file without a Part 10 header, or whose
    pixel data is shorter than its header declares, would fail the whole request with a 400 (the worker
    refuses it; shown below through the worker's own reader), so the tool leaves it out and says why."""
    record = write_study(tmp_path / "source", [SeriesSpec("ct", rows=32, cols=48, count=4)])
    folder = tmp_path / "study"
    folder.mkdir()
    first, second, third, kept = record.instances
    (folder / "no_preamble.dcm").write_bytes(first.path.read_bytes()[132:])  # meta group, no 'DICM'
    ds = dcmread(second.path)
    ds.preamble = None
    del ds.file_meta
    ds.save_as(folder / "raw_dataset", implicit_vr=True, little_endian=True, enforce_file_format=False)
    ds = dcmread(third.path)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(folder / "short_pixels.dcm", enforce_file_format=True)
    shutil.copy(kept.path, folder / "kept.dcm")

    study = load_study(folder)

    assert [i.sop_instance_uid for i in study.images] == [kept.sop_instance_uid]
    notes = {path.name: note for path, note in study.skipped}
    assert set(notes) == {"no_preamble.dcm", "raw_dataset", "short_pixels.dcm"}
    assert notes["no_preamble.dcm"].startswith("left out, the worker would refuse it: not a DICOM Part 10 file")
    assert notes["short_pixels.dcm"] == ("left out, the worker would refuse it: the file declares 32 x 48 pixels x 1 "
                                         "frame(s) x 1 sample(s) x 16 bits = 3072 bytes of pixels but its PixelData "
                                         "holds 100")
    for name in notes:  # the worker itself refuses each of them, with the same words
        with pytest.raises(BadRequest) as refused:
            parse_instance(0, folder / name, filename=name)
        if name == "short_pixels.dcm":
            assert notes[name].endswith(refused.value.message.partition(f"({name}) ")[2])


def test_dicom_without_pixels_is_sent_but_has_nothing_to_draw(tmp_path):
    ds = _minimal_image(rows=1, cols=1)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)

    study = load_study(tmp_path)

    assert study.skipped == []
    assert [image.has_pixels for image in study.images] == [False]


# ---------------------------------------------------------------------------------------------------
# Pictures become DICOM secondary captures


def test_png_and_jpeg_become_secondary_captures(tmp_path):
    record = write_study(tmp_path / "ct", [SeriesSpec("ct", rows=8, cols=10, count=2)])
    pictures = tmp_path / "screenshots"
    pictures.mkdir()
    gray = (np.arange(20 * 30).reshape(20, 30) % 251).astype(np.uint8)
    Image.fromarray(gray).save(pictures / "b_gray.bin", format="PNG")  # detected by content, not by name
    colour = np.zeros((12, 16, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 200, 100, 30
    Image.fromarray(colour).save(pictures / "a_photo.jpg", quality=95)

    study = load_study(tmp_path)
    converted = [image for image in study.images if image.path is None]

    assert study.skipped == []
    assert [image.source.name for image in converted] == ["a_photo.jpg", "b_gray.bin"]
    assert len({image.series_instance_uid for image in converted}) == 1  # one series per folder
    assert converted[0].series_instance_uid not in {spec.series_uid for spec in record.series}
    for number, image in enumerate(converted, start=1):
        ds = dcmread(io.BytesIO(image.read_bytes()))  # the bytes that will be sent are real DICOM
        assert ds.SOPClassUID == SECONDARY_CAPTURE_STORAGE
        assert ds.SOPInstanceUID == image.sop_instance_uid
        assert ds.StudyInstanceUID == record.study_instance_uid == study.study_instance_uid
        assert ds.PatientID == "TEST-0001"
        assert ds.InstanceNumber == number
        assert (ds.BitsAllocated, ds.BitsStored) == (8, 8)
        assert image.content_type == "application/dicom"
    photo, gray_image = (dcmread(io.BytesIO(image.read_bytes())) for image in converted)
    assert photo.PhotometricInterpretation == "RGB" and photo.pixel_array.shape == (12, 16, 3)
    assert np.abs(photo.pixel_array.astype(int) - colour).max() <= 4
    assert gray_image.PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_array_equal(gray_image.pixel_array, gray)
    np.testing.assert_array_equal(frame_pixels(converted[1]), gray)
    np.testing.assert_array_equal(to_display(converted[0], frame_pixels(converted[0])), photo.pixel_array)
    assert study.images[-2:] == converted  # the pictures' series comes after the scanner's


def test_pictures_alone_get_a_study_uid(tmp_path):
    Image.fromarray(np.full((4, 5), 9, np.uint8)).save(tmp_path / "only.png")
    study = load_study(tmp_path)
    (image,) = study.images
    assert image.dataset.StudyInstanceUID == study.study_instance_uid != ""


# ---------------------------------------------------------------------------------------------------
# What is not sent, and why


def test_unusable_files_are_skipped_with_reasons(tmp_path):
    record = write_study(tmp_path / "source", [SeriesSpec("ct", rows=32, cols=48, count=3)])
    folder = tmp_path / "study"
    shutil.copytree(tmp_path / "source", folder / "good")
    data = record.instances[0].path.read_bytes()
    (folder / "cut_in_pixels.dcm").write_bytes(data[: len(data) // 2])
    (folder / "cut_in_header.dcm").write_bytes(data[:300])
    (folder / "README.txt").write_text("how this study was exported\n")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "noise.bin").write_bytes(bytes(range(256)) * 8)
    (folder / "broken_after_preamble.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "animation.gif")
    dicomdir_source = dcmread(record.instances[1].path)
    dicomdir_source.StudyTime, dicomdir_source.StudyID = "120000", "1"
    fileset = FileSet()
    fileset.add(dicomdir_source)
    fileset.write(tmp_path / "fileset")
    shutil.copy(tmp_path / "fileset" / "DICOMDIR", folder / "DICOMDIR")

    study = load_study(folder)
    reasons = {path.name: reason for path, reason in study.skipped}

    assert len(study.images) == 3
    assert set(reasons) == {"cut_in_pixels.dcm", "cut_in_header.dcm", "README.txt", "empty.dcm", "noise.bin",
                            "broken_after_preamble.dcm", "animation.gif", "DICOMDIR"}
    assert "truncated" in reasons["cut_in_pixels.dcm"]
    assert "text file" in reasons["README.txt"]
    assert reasons["empty.dcm"] == "empty file"
    assert "DICOMDIR" in reasons["DICOMDIR"]
    assert "GIF" in reasons["animation.gif"] and "PNG and JPEG" in reasons["animation.gif"]
    assert "not a DICOM file" in reasons["noise.bin"]
    assert all(isinstance(reason, str) and reason for reason in reasons.values())


# ---------------------------------------------------------------------------------------------------
# Windowing


def test_window_linear_follows_the_dicom_formula():
    # c = 40, w = 400: below -160 black, above 239 white, linear in between
    values = np.array([-1000, -160, -159.5, -159, 39.5, 40, 238, 239, 239.5, 3000])
    expected = [0, 0, 0, 1, 128, 128, 254, 255, 255, 255]
    # -159.5 -> ((-159.5 - 39.5) / 399 + 0.5) * 255 = 0.32 -> 0 ; -159 -> 0.64 -> 1
    # 39.5 -> 127.5 -> 128 (half up) ; 40 -> 127.82 -> 128 ; 238 -> 254.36 -> 254 ; 239 -> 255
    assert window_linear(values, 40, 400).tolist() == expected
    assert window_linear(np.array([9, 9.5, 9.6, 10]), 10, 1).tolist() == [0, 0, 255, 255]  # width 1: a step
    # c = 3, w = 5: 2 -> ((2 - 2.5) / 4 + 0.5) * 255 = 95.6 -> 96 ; 4 -> 223.1 -> 223
    assert window_linear(np.array([[0, 2], [4, 6]]), 3, 5).tolist() == [[0, 96], [223, 255]]
    assert window_linear(np.array([1.0]), 0, 0).dtype == np.uint8  # invalid width acts as 1, no division by 0


def test_ct_uses_its_rescale_and_window(tmp_path):
    write_study(tmp_path, [SeriesSpec("ct", rows=32, cols=48, count=1)])
    (image,) = load_study(tmp_path).images
    stored = frame_pixels(image)

    shown = to_display(image, stored)

    assert shown.dtype == np.uint8 and shown.shape == (32, 48)
    np.testing.assert_array_equal(shown, window_linear(stored.astype(float) - 1024, 40, 400))
    probe = np.array([[864, 1064, 1263, 1500]], dtype=np.uint16)  # HU -160, 40, 239, 476
    assert to_display(image, probe).tolist() == [[0, 128, 255, 255]]


def test_multi_valued_window_uses_the_first(tmp_path):
    write_study(tmp_path, [SeriesSpec("ct", rows=8, cols=10, count=1)])
    (image,) = load_study(tmp_path).images
    image.dataset.WindowCenter, image.dataset.WindowWidth = [40, 400], [400, 2000]
    assert to_display(image, np.array([[864, 1064, 1263]], dtype=np.uint16)).tolist() == [[0, 128, 255]]


def test_mr_without_window_uses_the_frame_min_and_max(tmp_path):
    write_study(tmp_path, [SeriesSpec("mr", rows=40, cols=24, count=1, modality="MR")])
    (image,) = load_study(tmp_path).images
    assert "WindowCenter" not in image.dataset

    probe = np.array([[100, 150, 200, 300]], dtype=np.uint16)
    assert to_display(image, probe).tolist() == [[0, 64, 128, 255]]  # 50/200*255 = 63.75, 100/200*255 = 127.5
    shown = to_display(image, frame_pixels(image))
    assert (shown.min(), shown.max()) == (0, 255)
    assert to_display(image, np.full((2, 3), 7, np.uint16)).tolist() == [[0, 0, 0], [0, 0, 0]]

    image.dataset.PhotometricInterpretation = "MONOCHROME1"  # high values are dark
    assert to_display(image, probe).tolist() == [[255, 191, 127, 0]]


def test_colour_frames_pass_through_as_uint8(tmp_path):
    Image.fromarray(np.full((4, 5, 3), (10, 20, 30), np.uint8)).save(tmp_path / "c.png")
    (image,) = load_study(tmp_path).images
    shown = to_display(image, frame_pixels(image))
    assert shown.dtype == np.uint8 and shown.shape == (4, 5, 3)
    assert shown[0, 0].tolist() == [10, 20, 30]
