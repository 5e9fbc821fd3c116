"""The test tool with DICOM answers: `python -m testtool --output-formats dicom` against real worker and bridge
processes (the mock model, example_models.hounsfield). SEGs must be drawn like masks on the frames they derive
from, the TID 1500 report listed in the summary and the HTML report, its regions drawn like boxes and lines.

Pixels are checked where the answer is known independently: the Hounsfield phantom's labels
(tests/test_hounsfield.py), and the mock model's Arterys masks fetched for the same study.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from arterys_http.label_colours import label_colours
from example_models.hounsfield import AIR, BONE
from tests import dicom_factory as factory
from tests.http_helpers import parse_answer, post_like_original_tool
from tests.services import ROOT, start_bridge, start_worker, wait_for_health
from tests.test_dicom_export_studies import write_export_study
from tests.test_hounsfield import EXPECTED_BOXES, phantom, write_phantom
from testtool.answer import map_file
from testtool.dicom_outputs import read_dicom_outputs
from testtool.display import frame_pixels, to_display
from testtool.findings import BooleanMask, LabelMask, findings_for_study
from testtool.loading import load_study
from testtool.measurement_report import SR_COLOR
from testtool.overlay import DISTINCT_COLORS
from testtool.render import choose_scale

# the segments' recommended display colours, which the worker takes from arterys_http.label_colours
BONE_COLOR, AIR_COLOR = label_colours(["bone", "air"])["bone"], label_colours(["bone", "air"])["air"]


def run_tool(port: int, study: Path, out: Path, command: str, route: str = "/", formats: str = "dicom", *extra: str):
    result = subprocess.run([sys.executable, "-m", "testtool", "--host", "127.0.0.1", "-p", str(port), "-r", route,
                             "-i", str(study), "-o", str(out), "-c", command, "--output-formats", formats, "-q",
                             *extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tool runs asking for DICOM only: the phantom (Hounsfield model), a CT series' probability mask and
    its linear measurements (mock model); and the mock model's Arterys answer to the mask request."""
    tmp = tmp_path_factory.mktemp("testtool-dicom")
    phantom_dir = tmp / "phantom"
    write_phantom(phantom_dir)
    ct = factory.write_study(tmp / "ct", [factory.SeriesSpec("ct", rows=32, cols=48, count=4)])
    export, _ = write_export_study(tmp / "export")
    workers = [start_worker(tmp, "mock_model", wait_serving=False),
               start_worker(tmp, "example_models.hounsfield", wait_serving=False)]
    bridge = None
    try:
        for worker in workers:
            wait_for_health(worker)
        bridge = start_bridge(tmp, workers[0].address, "--route", f"/hounsfield={workers[1].address}")
        out = SimpleNamespace(phantom=phantom_dir, ct=ct.folder, tmp=tmp)
        out.hounsfield = (tmp / "out-hu", run_tool(bridge.port, phantom_dir, tmp / "out-hu", "segment-hounsfield",
                                                   "/hounsfield"))
        out.probability = (tmp / "out-p", run_tool(bridge.port, ct.folder, tmp / "out-p", "get-probability-mask",
                                                   "/", "dicom", "--request-options",
                                                   "dicom_segmentation_type=FRACTIONAL"))
        out.lengths = (tmp / "out-l", run_tool(bridge.port, ct.folder, tmp / "out-l", "get-linear-measurements"))
        out.arterys = parse_answer(post_like_original_tool(
            f"http://{bridge.address}/", {"inference_command": "get-probability-mask"},
            [image.path for image in load_study(ct.folder).images], timeout=60))
        request = {"inference_command": "get-label-mask", "output_formats": ["arterys", "dicom"]}
        out.export = (tmp / "export", parse_answer(post_like_original_tool(
            f"http://{bridge.address}/", request, [i.path for i in export.instances], timeout=60)))
        yield out
    finally:
        for service in ([bridge] if bridge else []) + workers:
            service.stop()


def drawn_pixels(png: Path, rows: int, cols: int) -> np.ndarray:
    """The centre of each enlarged image pixel: the colour a mask gave it (outlines lie on the blocks' edges)."""
    scale = choose_scale(rows, cols)
    picture = np.asarray(Image.open(png).convert("RGB"))
    return picture[scale // 2:rows * scale:scale, scale // 2:cols * scale:scale]


def blend(base: np.ndarray, color) -> np.ndarray:
    """Half the colour over the base, rounded half up: what a mask does to a pixel."""
    return np.floor(base.astype(np.float64) * 0.5 + np.asarray(color, dtype=np.float64) * 0.5 + 0.5).astype(np.uint8)


def display_rgb(study, index: int) -> np.ndarray:
    image = study.images[index]
    shown = to_display(image, frame_pixels(image, 0), 0)
    return np.repeat(shown[:, :, None], 3, axis=2) if shown.ndim == 2 else shown


def test_segments_are_drawn_on_the_frames_they_derive_from_like_masks(runs):
    out, _ = runs.hounsfield
    study = load_study(runs.phantom)
    labels = phantom()[1]
    for z in (3, 4, 5):  # slices with no box (nothing drawn over the pixels), each with other labels
        base = display_rgb(study, z)
        expected = base.copy()
        expected[labels[z] == BONE] = blend(base[labels[z] == BONE], BONE_COLOR)
        expected[labels[z] == AIR] = blend(base[labels[z] == AIR], AIR_COLOR)
        drawn = drawn_pixels(out / f"series01_slice{z + 1:04d}_frame01.png", *labels.shape[1:])
        np.testing.assert_array_equal(drawn, expected, err_msg=f"slice {z + 1}")
    assert (labels[3] == BONE).sum() > 50 and (labels[3] == AIR).sum() > 30  # the check covers both segments
    assert not (out / "output_masks_1.npy").exists()  # DICOM only: no Arterys mask was drawn instead


def test_report_regions_are_drawn_like_boxes_on_their_image(runs):
    out, _ = runs.hounsfield
    label, z, (left, top), (right, bottom), _ = EXPECTED_BOXES[0]
    scale = choose_scale(*phantom()[1].shape[1:])
    picture = np.asarray(Image.open(out / f"series01_slice{z + 1:04d}_frame01.png").convert("RGB"))
    # the outline runs along the outer edge of the box's pixels, over the Arterys box (the JSON keeps it)
    top_edge = picture[top * scale, left * scale:(right + 1) * scale]
    left_edge = picture[top * scale:(bottom + 1) * scale, left * scale]
    assert (top_edge == SR_COLOR).all() and (left_edge == SR_COLOR).all(), label


def test_summary_and_report_list_the_segmentation_and_the_measurement_groups(runs):
    out, run = runs.hounsfield
    result = json.loads((out / "response.json").read_text())
    series_json = next(iter(result["series_ml_json"].values()))
    assert "1 bone, 2 air" in run.stdout
    assert "part 2: Imaging Measurement Report (TID 1500), 4 measurement group(s)" in run.stdout
    assert "part 3: Imaging Measurement Report (TID 1500), 3 measurement group(s)" in run.stdout
    (bone,) = [line for line in run.stdout.splitlines() if "1. bone: TID 1411 volumetric ROI" in line]
    assert "finding Bone (Tissue)" in bone and "segment 1 (bone) of the SEG of part 1" in bone
    assert f"Volume: {series_json['bone_volume_ml']:.6g} ml" in bone  # in the segment's group, in mL
    boxes = [line for line in run.stdout.splitlines() if "TID 1410 planar ROI" in line]
    assert [line.split(". ", 1)[1].split(":")[0] for line in boxes] == [label for label, *_ in EXPECTED_BOXES]
    assert "POLYLINE [[10, 8], [20, 8], [20, 16], [10, 16], [10, 8]] on image" in boxes[0]

    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<h3>Segmentations (DICOM SEG)</h3>" in html and "<h3>Structured report (TID 1500) · part 2</h3>" in html
    assert "<h3>Structured report (TID 1500) · part 3</h3>" in html
    # the segments' recommended display colours: arterys_http.label_colours' colours for the answer's labels
    colours = label_colours(["bone", "air"])
    assert f'<span class="swatch" style="background: rgb{colours["bone"]}"></span>1 bone' in html
    assert f'<span class="swatch" style="background: rgb{colours["air"]}"></span>2 air' in html
    for _, z, *_ in EXPECTED_BOXES:  # each region links the PNG it is drawn on
        assert f'drawn on <a href="series01_slice{z + 1:04d}_frame01.png">' in html
    assert html.count("<td>TID 1501 measurements</td>") == 1  # the series classification (components)
    assert f"Volume: {series_json['bone_volume_ml']:.6g} ml" in html


def test_a_fractional_segmentation_is_drawn_like_a_probability_mask(runs):
    out, run = runs.probability
    study = load_study(runs.ct)
    (part, binary), = [(p, b) for p, b in zip(runs.arterys.json["parts"], runs.arterys.binaries, strict=True)]
    shape = part["binary_data_shape"]
    mask = np.frombuffer(binary, np.uint8).reshape(shape["depth"], shape["height"], shape["width"])
    assert ((mask > 0) & (mask < 128)).any() and (mask >= 128).any()  # the threshold decides something
    for z in range(shape["depth"]):
        base = display_rgb(study, z)
        chosen = mask[z] >= 128  # probability 0.5 and above
        expected = base.copy()
        expected[chosen] = blend(base[chosen], DISTINCT_COLORS[0])
        drawn = drawn_pixels(out / f"series01_slice{z + 1:04d}_frame01.png", shape["height"], shape["width"])
        np.testing.assert_array_equal(drawn, expected, err_msg=f"slice {z + 1}")
    assert "FRACTIONAL (PROBABILITY)" in run.stdout and "1 mock probability_mask" in run.stdout


def test_length_measurements_are_listed_and_drawn_as_lines(runs):
    out, run = runs.lengths
    result = json.loads((out / "response.json").read_text())
    pixel = next(item for item in result["linear_measurements_2d"] if item["coordinates_type"] == "pixel")
    (x0, y0), (x1, _) = pixel["start"], pixel["end"]
    length = np.hypot((x1 - x0) * 0.7, 0)  # a horizontal line; columns are 0.7 mm apart (tests/dicom_factory.py)
    assert f"Length: {length:.6g} mm; POLYLINE [[{x0}, {y0}], [{x1}, {y0}]] on image" in run.stdout
    study = load_study(runs.ct)
    z = next(k for k, image in enumerate(study.images) if image.sop_instance_uid == pixel["SOPInstanceUID"])
    scale = choose_scale(32, 48)
    picture = np.asarray(Image.open(out / f"series01_slice{z + 1:04d}_frame01.png").convert("RGB"))
    row = picture[y0 * scale + (scale - 1) // 2, x0 * scale + scale:x1 * scale]  # along the line, off its ends
    assert (row == SR_COLOR).all()  # the report's line, drawn over the Arterys one (cyan)


def test_segmentations_and_regions_naming_images_not_loaded_are_notes(runs, tmp_path):
    """The same answer read against the phantom without two of its slices: notes, no exception."""
    out, _ = runs.hounsfield
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in sorted(runs.phantom.iterdir())[2:]:
        shutil.copy(path, partial / path.name)
    study = load_study(partial)
    result = json.loads((out / "response.json").read_text())
    binaries = [map_file(out / f"sc_{n}.dcm") for n in (1, 2)]
    dicom = read_dicom_outputs(study, result, binaries)
    missing = [note for note in dicom.notes if "is not an input image" in note]
    assert len([note for note in missing if note.startswith("part 1 (SEG): source image")]) == 2
    assert any(note.startswith("part 2 (SR): image") for note in missing)
    assert dicom.segmentations[0].planes == len(study.images) == 4
    assert {uid for uid, _ in dicom.findings} == {image.sop_instance_uid for image in study.images}


def test_every_segmentation_frame_lands_where_the_arterys_mask_does(runs):
    """Axial, sagittal, tilted, enhanced multi-frame and 4D series (one SEG per time point): each segment of
    each SEG, read by the tool, equals its label's pixels of the Arterys label mask on the same frame."""
    folder, answer = runs.export
    study = load_study(folder)
    arterys, _ = findings_for_study(study, answer.json, answer.binaries)
    dicom = read_dicom_outputs(study, answer.json, answer.binaries)
    assert dicom.notes == [] and len(dicom.segmentations) == 7  # 3 series + 1 enhanced + 3 time points
    assert set(dicom.findings) == set(arterys) == {(i.sop_instance_uid, f) for i in study.images
                                                   for f in range(i.frames)}
    for key, items in dicom.findings.items():
        (labels,) = [item for item in arterys[key] if isinstance(item, LabelMask)]
        segments = {item.label: item.mask for item in items if isinstance(item, BooleanMask)}
        assert set(segments) == set(labels.label_map.values()) == {"core", "rim"}
        for value, name in labels.label_map.items():
            np.testing.assert_array_equal(segments[name], labels.mask == int(value), err_msg=f"{key} {name}")
    assert sum(int(item.mask.any()) for items in dicom.findings.values() for item in items) > 20
