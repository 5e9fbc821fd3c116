"""testtool.render: overlays checked pixel by pixel on tiny images, and the answer-to-image mapping.

Images are 4 rows x 5 columns wherever orientation matters, so a transposed mask cannot pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from arterys_http.label_colours import label_colours
from tests.dicom_factory import SAGITTAL, TILTED, write_enhanced_series, write_standard_study
from testtool.answer import ReceivedAnswer
from testtool.drawing import draw_box, draw_legend, draw_measurement, draw_text_lines
from testtool.findings import (
    BooleanMask,
    Box,
    Heatmap,
    LabelMask,
    Measurement,
    ProbabilityMask,
    TextLines,
    findings_for_study,
    measurement_length,
    world_to_pixel,
)
from testtool.loading import load_study
from testtool.overlay import (
    overlay_boolean,
    overlay_heatmap,
    overlay_labels,
    overlay_probability,
    palette_lookup,
)
from testtool.render import choose_scale, render_frame, render_image, save_png, write_pngs
from testtool.report import series_notes, summary
from testtool.study import InputImage, LoadedStudy

GRAY = 100
ROWS, COLS = 4, 5


def _gray(rows: int = ROWS, cols: int = COLS, value: int = GRAY) -> np.ndarray:
    return np.full((rows, cols, 3), value, dtype=np.uint8)


def _changed(before, after) -> set[tuple[int, int]]:
    """(row, col) of every pixel whose colour differs."""
    before, after = np.asarray(before), np.asarray(after)
    if before.ndim == 2:
        before = np.repeat(before[:, :, None], 3, axis=2)
    return {(int(r), int(c)) for r, c in np.argwhere((before != after).any(axis=2))}


# ---------------------------------------------------------------------------------------------------
# Mask overlays


def test_probability_mask_threshold_decides_which_pixels_change():
    mask = np.array(
        [[0, 127, 128, 200, 255],
         [210, 0, 0, 0, 0],
         [0, 0, 0, 0, 0],
         [0, 0, 0, 0, 64]], dtype=np.uint8)
    image = _gray()

    at_half = overlay_probability(image, mask, threshold=0.5)
    at_080 = overlay_probability(image, mask, threshold=0.8)

    # 127/255 = 0.498 < 0.5 <= 128/255 ; 200/255 = 0.784 < 0.8 <= 210/255 = 0.824
    assert _changed(image, at_half) == {(0, 2), (0, 3), (0, 4), (1, 0)}
    assert _changed(image, at_080) == {(0, 4), (1, 0)}
    assert at_half[0, 2].tolist() == [178, 50, 50]  # 0.5 * 100 + 0.5 * (255, 0, 0), half up
    assert image[0, 2].tolist() == [GRAY] * 3  # the input is not modified


def test_probability_mask_colour_and_alpha():
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[3, 1] = 255
    out = overlay_probability(_gray(), mask, threshold=0.5, color=(0, 0, 200), alpha=0.25)
    assert out[3, 1].tolist() == [75, 75, 125]  # 0.75 * 100 + 0.25 * (0, 0, 200)


def test_boolean_mask_colours_every_non_zero_pixel():
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[0, 0], mask[1, 4], mask[3, 2] = 1, 255, 7
    image = _gray()

    out = overlay_boolean(image, mask, color=(0, 255, 0), alpha=0.25)

    assert _changed(image, out) == {(0, 0), (1, 4), (3, 2)}
    assert out[1, 4].tolist() == [75, 139, 75]  # 75 + 63.75 -> 139


def test_overlay_accepts_a_grayscale_display_image():
    display = np.full((ROWS, COLS), GRAY, np.uint8)
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[2, 3] = 1
    out = overlay_boolean(display, mask, color=(0, 255, 0), alpha=0.25)
    assert out.shape == (ROWS, COLS, 3)
    assert _changed(display, out) == {(2, 3)}


def test_a_transposed_mask_is_refused():
    with pytest.raises(ValueError, match="mask is 5x4, image is 4x5"):
        overlay_boolean(_gray(), np.zeros((COLS, ROWS), np.uint8))


TWO_POINTS = {
    "type": "anchorpoints",
    "data": [
        {"threshold": 0.0, "color": [0, 255, 10, 0]},
        {"threshold": 1.0, "color": [255, 0, 10, 255]},
    ],
}


def test_palette_interpolates_between_two_anchorpoints():
    table = palette_lookup(TWO_POINTS)

    assert table.shape == (256, 4) and table.dtype == np.uint8
    assert table[0].tolist() == [0, 255, 10, 0]
    assert table[255].tolist() == [255, 0, 10, 255]
    assert table[127].tolist() == [127, 128, 10, 127]  # the midpoint
    assert table[128].tolist() == [128, 127, 10, 128]
    np.testing.assert_array_equal(table[:, 0], np.arange(256))  # value v is probability v / 255


def test_palette_hits_a_middle_anchorpoint_exactly_whatever_the_order():
    palette = {
        "type": "anchorpoints",
        "data": [
            {"threshold": 1.0, "color": [255, 255, 255, 255]},
            {"threshold": 0.0, "color": [0, 0, 0, 0]},
            {"threshold": 0.4, "color": [100, 50, 200, 255]},
        ],
    }
    table = palette_lookup(palette)
    assert table[102].tolist() == [100, 50, 200, 255]  # 102 / 255 = 0.4
    assert table[51].tolist() == [50, 25, 100, 128]  # halfway to the middle point, half up


@pytest.mark.parametrize(
    "palette",
    [
        None,
        {"type": "anchorpoints", "data": [{"threshold": 0.0, "color": [0, 0, 0, 0]}]},
        {"type": "anchorpoints", "data": [{"threshold": 0.0, "color": [0, 0, 0]},
                                          {"threshold": 1.0, "color": [1, 1, 1, 1]}]},
        {"type": "anchorpoints", "data": [{"threshold": 0.0, "color": [0, 0, 0, 0]},
                                          {"threshold": 1.5, "color": [1, 1, 1, 1]}]},
        {"type": "gradient", "data": []},
    ],
)
def test_invalid_palettes_are_refused_with_a_reason(palette):
    with pytest.raises(ValueError):
        palette_lookup(palette)


def test_heatmap_composites_with_the_palette_alpha():
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[0, 4], mask[3, 0] = 255, 128
    image = _gray()

    out = overlay_heatmap(image, mask, TWO_POINTS)

    assert _changed(image, out) == {(0, 4), (3, 0)}  # value 0 has alpha 0
    assert out[0, 4].tolist() == [255, 0, 10]  # alpha 255: the palette colour itself
    # alpha 128/255 over 100: r = (100 * 127 + 128 * 128) / 255 = 114.05, g = 113.55, b = 54.82
    assert out[3, 0].tolist() == [114, 114, 55]


def test_one_colour_per_label_across_series_parts_and_label_maps(tmp_path):
    """The colour follows the label, never the part's position: the same label is the same colour in every
    series (and a class of a label mask named like a mask is that mask's colour), from the shared
    arterys_http.label_colours, which the worker's DICOM Segmentations use too."""
    write_standard_study(tmp_path / "study")
    study = load_study(tmp_path / "study")
    series = [uid for uid, images in study.series.items() if images[0].frames == 1][:2]

    def volume(uid: str, label: str, binary_type: str = "probability_mask", **extra) -> dict:
        images = study.series[uid]
        shape = {"timepoints": 1, "depth": len(images), "height": images[0].rows, "width": images[0].cols}
        return {"label": label, "binary_type": binary_type, "binary_data_shape": shape, "SeriesInstanceUID": uid,
                **extra}

    parts = [volume(series[0], "liver"), volume(series[1], "spleen"), volume(series[1], "liver"),
             volume(series[0], "organs", "numeric_label_mask", label_map={"1": "liver", "2": "kidney"})]
    binaries = [np.ones(p["binary_data_shape"]["depth"] * p["binary_data_shape"]["height"]
                        * p["binary_data_shape"]["width"], np.uint8).tobytes() for p in parts]
    findings, notes = findings_for_study(study, _answer(parts=parts), binaries)

    assert notes == []
    expected = label_colours(["liver", "spleen", "organs", "kidney"])
    drawn = [f for found in findings.values() for f in found]
    masks = {(f.label, f.color) for f in drawn if isinstance(f, ProbabilityMask)}
    assert masks == {("liver", expected["liver"]), ("spleen", expected["spleen"])}
    (classes,) = {tuple(sorted(f.colors.items())) for f in drawn if isinstance(f, LabelMask)}
    assert dict(classes) == {1: expected["liver"], 2: expected["kidney"]}


def test_outline_mode_draws_only_the_edge_in_the_full_colour():
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[0:3, 1:4] = 255  # a 3 x 3 square: its centre (1, 2) is the only inner pixel
    filled = overlay_probability(_gray(), mask, 0.5, (255, 0, 0), 0.5)
    outlined = overlay_probability(_gray(), mask, 0.5, (255, 0, 0), 0.5, outline=True)
    square = {(r, c) for r in range(3) for c in range(1, 4)}
    assert _changed(_gray(), filled) == square
    assert _changed(_gray(), outlined) == square - {(1, 2)}
    assert all(outlined[r, c].tolist() == [255, 0, 0] for r, c in square - {(1, 2)})
    labels = np.zeros((ROWS, COLS), np.uint8)
    labels[:, :2], labels[:, 2:] = 1, 2  # two regions side by side, each touching the image's edge
    out = overlay_labels(_gray(), labels, {1: (255, 0, 0), 2: (0, 0, 255)}, outline=True)
    assert out[1, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 0, 0]  # image edge, region edge
    assert out[1, 3].tolist() == [GRAY] * 3 and out[1, 2].tolist() == [0, 0, 255]


def test_label_overlay_colours_each_class_and_leaves_unknown_values():
    colors = {1: (255, 0, 0), 2: (0, 0, 255)}
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[0, 1], mask[2, 4], mask[3, 3] = 1, 2, 3
    image = _gray()

    out = overlay_labels(image, mask, colors, alpha=0.5)

    assert _changed(image, out) == {(0, 1), (2, 4)}
    assert out[0, 1].tolist() == [178, 50, 50]
    assert out[2, 4].tolist() == [50, 50, 178]


# ---------------------------------------------------------------------------------------------------
# Vector drawing


def _black(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height))


def test_box_outline_covers_exactly_its_border_pixels():
    img = _black(10, 8)
    draw_box(img, top_left=[2, 1], bottom_right=[6, 4], color=(255, 255, 0))

    expected = {(r, c) for r in (1, 4) for c in range(2, 7)} | {(r, c) for r in range(1, 5) for c in (2, 6)}
    assert _changed(np.zeros((8, 10, 3), np.uint8), np.asarray(img)) == expected
    assert np.asarray(img)[1, 2].tolist() == [255, 255, 0]


def test_box_at_scale_follows_the_outer_edge_of_the_enlarged_pixels():
    img = _black(30, 24)
    draw_box(img, top_left=[2, 1], bottom_right=[6, 4], color=(0, 255, 0), scale=3)

    x0, y0, x1, y1 = 6, 3, 20, 14  # pixels 2..6 x 1..4 become blocks 6..20 x 3..14
    expected = ({(r, c) for r in (y0, y1) for c in range(x0, x1 + 1)}
                | {(r, c) for r in range(y0, y1 + 1) for c in (x0, x1)})
    assert _changed(np.zeros((24, 30, 3), np.uint8), np.asarray(img)) == expected


def test_box_label_is_written_next_to_the_box():
    img = _black(200, 120)
    draw_box(img, [10, 40], [60, 90], color=(255, 255, 0), label="nodule")
    changed = _changed(np.zeros((120, 200, 3), np.uint8), np.asarray(img))
    above = {(r, c) for r, c in changed if r < 40}
    assert above and all(c >= 10 for _, c in above)


def test_measurement_line_pixels():
    img = _black(8, 6)
    draw_measurement(img, start=[1, 2], end=[4, 2], label="", length_text="", color=(0, 255, 255))
    assert _changed(np.zeros((6, 8, 3), np.uint8), np.asarray(img)) == {(2, 1), (2, 2), (2, 3), (2, 4)}

    img = _black(8, 6)
    draw_measurement(img, start=[0, 0], end=[3, 3], label="", length_text="")
    assert _changed(np.zeros((6, 8, 3), np.uint8), np.asarray(img)) == {(0, 0), (1, 1), (2, 2), (3, 3)}


def test_measurement_length_units():
    # PixelSpacing is [row spacing, column spacing]: dx = 3 columns * 0.7, dy = 4 rows * 0.8
    value, unit = measurement_length([0, 0], [3, 4], "pixel", [0.8, 0.7])
    assert unit == "mm" and value == pytest.approx(np.hypot(2.1, 3.2))
    assert measurement_length([1, 1], [4, 5], "pixel", None) == (5.0, "px")
    assert measurement_length([0, 0, 0], [3, 4, 12], "world", [0.8, 0.7]) == (13.0, "mm")
    with pytest.raises(ValueError):
        measurement_length([0, 0], [1, 1], "voxel", None)


def test_text_lines_stay_at_the_top_and_never_overflow():
    img = _black(256, 256)
    draw_text_lines(img, ["malignancy: 0.83", "finding: nodule", "x" * 500])
    rows = {r for r, _ in _changed(np.zeros((256, 256, 3), np.uint8), np.asarray(img))}
    assert rows and max(rows) < 70

    crowded = _black(64, 40)
    draw_text_lines(crowded, [f"line {n}" for n in range(100)])  # more than fits: cut, no error


def test_legend_goes_in_a_panel_below_the_image_with_each_class_colour():
    img = _black(300, 120)
    out = draw_legend(img, {"2": "spleen", "1": "liver"}, {1: (255, 0, 0), 2: (0, 0, 255)})
    pixels = np.asarray(out)
    assert out.width == 300 and out.height > 120
    assert not pixels[:120].any()  # the image itself is untouched
    red_rows = np.flatnonzero((pixels == (255, 0, 0)).all(axis=2).any(axis=1))
    blue_rows = np.flatnonzero((pixels == (0, 0, 255)).all(axis=2).any(axis=1))
    assert red_rows.min() >= 120 and blue_rows.min() > red_rows.max()  # class 1 first, then class 2
    assert draw_legend(img, {}, {}) is img  # nothing to list: no panel


# ---------------------------------------------------------------------------------------------------
# One image


def test_choose_scale_brings_small_images_to_about_256_pixels():
    assert choose_scale(32, 48) == 8
    assert choose_scale(512, 512) == 1
    assert choose_scale(200, 300) == 2
    assert choose_scale(16, 2000) == 1  # the long side is capped


def test_render_image_blends_masks_before_enlarging_and_draws_boxes_after():
    display = np.full((32, 48), GRAY, np.uint8)
    mask = np.zeros((32, 48), np.uint8)
    mask[3, 5] = 255
    findings = [ProbabilityMask(mask, "lesion"), Box((10, 20), (12, 22), "box", (255, 255, 0))]

    img = render_image(display, findings, scale=8)
    pixels = np.asarray(img)

    assert img.width == 384 and img.height > 256  # the image, then the legend panel below it
    assert (pixels[24:32, 40:48] == (178, 50, 50)).all()  # mask pixel (row 3, col 5) as one 8x8 block
    assert pixels[23, 40].tolist() == [GRAY] * 3 and pixels[24, 39].tolist() == [GRAY] * 3
    assert pixels[160, 80].tolist() == [255, 255, 0]  # box corner: row 20 * 8, col 10 * 8
    assert pixels[170, 90].tolist() == [GRAY] * 3  # the inside of the box is untouched
    assert (pixels[200:256, :40] == GRAY).all()  # no legend over the anatomy any more
    legend = pixels[256:, :40]  # below the image: the swatch of the mask's colour
    assert (legend == (255, 0, 0)).all(axis=2).any()
    assert render_frame(display, findings, scale=8).image.size == (384, 256)


def test_classification_text_goes_below_the_image():
    display = np.full((32, 48), GRAY, np.uint8)
    rendered = render_frame(display, [TextLines(("malignancy: 0.83", "finding: nodule"))], scale=8)
    assert rendered.lines == ["malignancy: 0.83", "finding: nodule"]
    assert (np.asarray(rendered.image) == GRAY).all()
    picture = np.asarray(rendered.picture())
    assert picture.shape[0] > 256 and (picture[:256] == GRAY).all()
    assert (picture[256:] == 255).all(axis=2).any()  # white text in the panel


def test_render_image_at_scale_one_changes_only_mask_pixels():
    display = np.full((ROWS, COLS), GRAY, np.uint8)
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[1, 3] = 1
    img = render_frame(display, [BooleanMask(mask, label="")], scale=1).image
    assert _changed(display, np.asarray(img)) == {(1, 3)}


def test_save_png_round_trips(tmp_path):
    img = render_image(np.full((ROWS, COLS), 7, np.uint8), [], scale=2)
    path = save_png(img, tmp_path / "x.png")
    with Image.open(path) as reread:
        assert reread.size == (10, 8)
        assert np.asarray(reread.convert("RGB"))[0, 0].tolist() == [7, 7, 7]


# ---------------------------------------------------------------------------------------------------
# The answer -> findings per image


def _image(sop: str, series: str, *, frames: int = 1, slice_index: int = 0, timepoint: int = 0,
           rows: int = ROWS, cols: int = COLS, spacing=None, position=None, orientation=None) -> InputImage:
    ds = Dataset()
    if spacing:
        ds.PixelSpacing = list(spacing)
    if position:
        ds.ImagePositionPatient = list(position)
    if orientation:
        ds.ImageOrientationPatient = list(orientation)
    return InputImage(path=None, source=Path(f"{sop}.dcm"), dataset=ds, sop_instance_uid=sop,
                      series_instance_uid=series, rows=rows, cols=cols, frames=frames, position=position,
                      orientation=orientation, slice_index=slice_index, timepoint=timepoint)


def _study(*images: InputImage) -> LoadedStudy:
    series: dict[str, list[InputImage]] = {}
    for image in images:
        series.setdefault(image.series_instance_uid, []).append(image)
    return LoadedStudy("1.2.3", list(images), series, [])


def _mask_3d(series: str, shape: tuple[int, int, int, int], binary_type: str = "probability_mask", **extra):
    timepoints, depth, height, width = shape
    return {"label": "seg", "binary_type": binary_type, "SeriesInstanceUID": series,
            "binary_data_shape": {"timepoints": timepoints, "depth": depth, "width": width, "height": height},
            **extra}


def _mask_2d(sop: str, height: int = ROWS, width: int = COLS, binary_type: str = "probability_mask", **extra):
    reference = {"SOPInstanceUID": sop, **({"frame_number": extra.pop("frame_number")}
                                           if "frame_number" in extra else {})}
    return {"label": "seg", "binary_type": binary_type, "dicom_image": reference,
            "binary_data_shape": {"width": width, "height": height}, **extra}


def _answer(*parts, **extra) -> dict:
    return {"protocol_version": "1.0", "parts": list(parts), **extra}


def test_3d_mask_slices_follow_the_protocol_layout_on_non_square_images():
    study = _study(*(_image(f"sop{k}", "S", slice_index=k) for k in range(3)))
    volume = np.zeros((1, 3, ROWS, COLS), np.uint8)
    for k in range(3):
        volume[0, k, k, k + 1] = 255  # slice k: row k, column k + 1

    answer = _answer(_mask_3d("S", volume.shape))

    findings, notes = findings_for_study(study, answer, [volume.tobytes()], False)

    assert notes == []
    display = np.full((ROWS, COLS), GRAY, np.uint8)
    for k in range(3):
        (finding,) = findings[(f"sop{k}", 0)]
        assert isinstance(finding, ProbabilityMask) and finding.threshold == 0.5
        np.testing.assert_array_equal(finding.mask, volume[0, k])
        assert _changed(display, np.asarray(render_frame(display, [finding]).image)) == {(k, k + 1)}


def test_3d_mask_with_time_points_and_multi_frame_instances():
    study = _study(
        _image("t0s0", "S", timepoint=0, slice_index=0), _image("t0s1", "S", timepoint=0, slice_index=1),
        _image("t1s0", "S", timepoint=1, slice_index=0), _image("t1s1", "S", timepoint=1, slice_index=1),
        _image("multi", "M", frames=3),
    )
    volume = np.zeros((2, 2, ROWS, COLS), np.uint8)
    for t in range(2):
        for s in range(2):
            volume[t, s, t, s + 2] = 1
    frames = np.zeros((1, 3, ROWS, COLS), np.uint8)
    for f in range(3):
        frames[0, f, 3, f] = 1
    answer = _answer(_mask_3d("S", volume.shape, "boolean_mask"), _mask_3d("M", frames.shape, "boolean_mask"))

    findings, notes = findings_for_study(study, answer, [volume.tobytes(), frames.tobytes()], False)

    assert notes == []
    for t in range(2):
        for s in range(2):
            (finding,) = findings[(f"t{t}s{s}", 0)]
            assert isinstance(finding, BooleanMask)
            assert {tuple(p) for p in np.argwhere(finding.mask)} == {(t, s + 2)}
    for f in range(3):
        (finding,) = findings[("multi", f)]
        assert {tuple(p) for p in np.argwhere(finding.mask)} == {(3, f)}
    assert findings[("t0s0", 0)][0].color == findings[("multi", 0)][0].color  # one label, one colour


def test_2d_masks_go_to_their_image_and_frame():
    study = _study(_image("single", "S"), _image("multi", "M", frames=3))
    first, second = np.zeros((ROWS, COLS), np.uint8), np.zeros((ROWS, COLS), np.uint8)
    first[0, 4], second[3, 0] = 255, 255
    answer = _answer(
        _mask_2d("single", probability_threshold=0.8),
        _mask_2d("multi", binary_type="heatmap", frame_number=2, palette="hot"),
        palettes={"hot": TWO_POINTS},
    )

    findings, notes = findings_for_study(study, answer, [first.tobytes(), second.tobytes()], False)

    assert notes == []
    assert set(findings) == {("single", 0), ("multi", 1)}
    (probability,) = findings[("single", 0)]
    assert probability.threshold == 0.8
    np.testing.assert_array_equal(probability.mask, first)
    (heatmap,) = findings[("multi", 1)]
    assert isinstance(heatmap, Heatmap) and heatmap.palette == TWO_POINTS
    np.testing.assert_array_equal(heatmap.mask, second)


def test_numeric_label_mask_keeps_its_label_map():
    study = _study(_image("a", "S"))
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[1, 1], mask[2, 2] = 1, 2
    label_map = {"1": "liver", "2": "spleen"}
    answer = _answer(_mask_2d("a", binary_type="numeric_label_mask", label_map=label_map))

    findings, notes = findings_for_study(study, answer, [mask.tobytes()], False)

    assert notes == []
    (finding,) = findings[("a", 0)]
    assert isinstance(finding, LabelMask) and finding.label_map == label_map
    img = render_frame(np.full((ROWS, COLS), GRAY, np.uint8), [finding]).image
    assert _changed(np.full((ROWS, COLS), GRAY, np.uint8), np.asarray(img)) == {(1, 1), (2, 2)}


def test_boxes_and_measurements_go_to_their_image():
    axial = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    study = _study(_image("a", "S", spacing=(0.8, 0.7)), _image("b", "S", frames=2),
                   _image("c", "S", spacing=(0.5, 0.25), position=(0.0, 0.0, 0.0), orientation=axial))
    answer = _answer(
        bounding_boxes_2d=[{"label": "nodule", "SOPInstanceUID": "a",
                            "top_left": [1, 0], "bottom_right": [3, 2]}],
        linear_measurements_2d=[
            {"label": "d", "SOPInstanceUID": "a", "coordinates_type": "pixel",
             "start": [0, 0], "end": [3, 4]},
            {"label": "e", "SOPInstanceUID": "b", "frame_number": 2, "coordinates_type": "pixel",
             "start": [0, 0], "end": [3, 4]},
            {"label": "w", "SOPInstanceUID": "c", "coordinates_type": "world",
             "start": [0.0, 0.0, 7.0], "end": [1.0, 2.0, 7.0]},
        ],
    )

    findings, notes = findings_for_study(study, answer, [], False)

    assert notes == []
    box, measurement = findings[("a", 0)]
    assert box == Box((1.0, 0.0), (3.0, 2.0), "nodule")
    assert measurement == Measurement((0.0, 0.0), (3.0, 4.0), "d", "3.8 mm")  # hypot(3 * 0.7, 4 * 0.8)
    assert findings[("b", 1)] == [Measurement((0.0, 0.0), (3.0, 4.0), "e", "5.0 px")]
    # world (1, 2) mm with 0.25 mm columns and 0.5 mm rows is column 4, row 4
    assert findings[("c", 0)] == [Measurement((0.0, 0.0), (4.0, 4.0), "w", "2.2 mm")]


def _patient_point(image, frame: int, col: float, row: float) -> list[float]:
    """The patient point of pixel (col, row) of a frame, straight from the DICOM definition."""
    geometry = image.geometry(frame)
    row_spacing, col_spacing = geometry.pixel_spacing
    point = (np.asarray(geometry.position) + col * col_spacing * np.asarray(geometry.orientation[:3])
             + row * row_spacing * np.asarray(geometry.orientation[3:]))
    return [round(float(v), 4) for v in point]


def test_world_measurements_use_each_frame_s_own_geometry(tmp_path):
    write_enhanced_series(tmp_path / "study", stacks=1, frames=4, orientation=TILTED, shear=1.5)
    study = load_study(tmp_path / "study")
    (image,) = study.images
    start, end = _patient_point(image, 2, 3, 2), _patient_point(image, 2, 10, 7)
    # frame 1's geometry would misplace it: the frames are sheared 1.5 mm (2.1 columns) per slice
    assert world_to_pixel(image, 0, start)[0] == pytest.approx(3 + 2 * 1.5 / 0.7, abs=1e-3)
    answer = _answer(linear_measurements_2d=[
        {"label": "xyz", "SOPInstanceUID": image.sop_instance_uid, "frame_number": 3, "coordinates_type": "world",
         "start": start, "end": end},
        {"label": "xy", "SOPInstanceUID": image.sop_instance_uid, "frame_number": 3, "coordinates_type": "world",
         "start": start[:2], "end": end[:2]},
    ])

    findings, notes = findings_for_study(study, answer, [], False)

    assert notes == []
    xyz, xy = findings[(image.sop_instance_uid, 2)]
    for found in (xyz, xy):
        assert found.start == pytest.approx((3, 2), abs=1e-3) and found.end == pytest.approx((10, 7), abs=1e-3)
        assert found.length_text == f"{np.hypot(7 * 0.7, 5 * 0.8):.1f} mm"  # the length on the plane


def test_world_x_y_on_a_sagittal_image_is_text_with_a_reason():
    study = _study(_image("s", "S", spacing=(1.0, 1.0), position=(0.0, 0.0, 0.0), orientation=SAGITTAL))
    answer = _answer(linear_measurements_2d=[{"label": "w", "SOPInstanceUID": "s", "coordinates_type": "world",
                                              "start": [0.0, 1.0], "end": [0.0, 3.0]}])
    findings, notes = findings_for_study(study, answer, [], False)
    assert findings[("s", 0)] == [TextLines(("w: 2.0 mm",))]
    assert notes == ["linear measurement 1: world [x, y] names no single point of this image, whose plane contains "
                     "the z axis (sagittal or coronal); give [x, y, z] to place it; shown as text only"]


def test_ml_json_becomes_text_lines_only_when_asked():
    study = _study(_image("a", "S"), _image("b", "S", frames=2), _image("c", "T"))
    answer = _answer(study_ml_json={"score": 2, "finding": "nodule", "p": 0.5},
                     series_ml_json={"T": {"quality": "good"}})

    findings, notes = findings_for_study(study, answer, [], True)

    assert notes == []
    assert set(findings) == {("a", 0), ("b", 0), ("b", 1), ("c", 0)}
    study_lines = ("study · score: 2", "study · finding: nodule", "study · p: 0.5")
    assert findings[("a", 0)] == [TextLines(study_lines)]
    assert findings[("c", 0)] == [TextLines(study_lines), TextLines(("series · quality: good",))]
    assert findings_for_study(study, answer, [], False) == ({}, [])


def test_dicom_outputs_are_not_drawn():
    study = _study(_image("a", "S"))
    answer = _answer({"label": "report", "binary_type": "dicom_structured_report"},
                     {"label": "sc", "binary_type": "dicom_secondary_capture"})
    assert findings_for_study(study, answer, [b"DICM...", b"DICM..."], True) == ({}, [])


BAD_ANSWERS = [
    ("not an object", [], [], "not a JSON object"),
    ("parts not a list", {"parts": "x"}, [], "'parts' is not a list"),
    ("part not an object", _answer("x"), [b""], "part 1: not a JSON object"),
    ("unknown type", _answer({**_mask_2d("a"), "binary_type": "vector_field"}), [bytes(20)],
     "unknown binary_type"),
    ("missing binary", _answer(_mask_2d("a"), _mask_2d("a")), [bytes(20)], "2 part(s) but 1 binary"),
    ("wrong length 2D", _answer(_mask_2d("a")), [bytes(19)], "19 bytes"),
    ("swapped 2D", _answer(_mask_2d("a", height=COLS, width=ROWS)), [bytes(20)], "swapped"),
    ("unknown image", _answer(_mask_2d("zzz")), [bytes(20)], "'zzz' is not an input image"),
    ("frame 0", _answer(_mask_2d("a", frame_number=0)), [bytes(20)], "frame_number 0"),
    ("frame as text", _answer(_mask_2d("a", frame_number="1")), [bytes(20)], "frame_number '1'"),
    ("no shape", _answer({"binary_type": "boolean_mask", "dicom_image": {"SOPInstanceUID": "a"}}),
     [bytes(20)], "binary_data_shape"),
    ("no target", _answer({"binary_type": "boolean_mask", "binary_data_shape": {"width": 5, "height": 4}}),
     [bytes(20)], "neither a SeriesInstanceUID"),
    ("unknown series", _answer(_mask_3d("Q", (1, 2, ROWS, COLS))), [bytes(40)], "'Q' is not a series"),
    ("depth mismatch", _answer(_mask_3d("S", (1, 3, ROWS, COLS))), [bytes(60)], "depth=3"),
    ("swapped 3D", _answer(_mask_3d("S", (1, 2, COLS, ROWS))), [bytes(40)], "swapped"),
    ("wrong length 3D", _answer(_mask_3d("S", (1, 2, ROWS, COLS))), [bytes(39)], "39 bytes"),
    ("text dimension", _answer(_mask_3d("S", (1, "2", ROWS, COLS))), [bytes(40)], "depth is '2'"),
    ("bad threshold", _answer(_mask_2d("a", probability_threshold=1.5)), [bytes(20)],
     "probability_threshold"),
    ("missing palette", _answer(_mask_2d("a", binary_type="heatmap", palette="nope")), [bytes(20)],
     "'nope' is not in the top-level 'palettes'"),
    ("broken palette", _answer(_mask_2d("a", binary_type="heatmap", palette="p"),
                               palettes={"p": {"data": []}}), [bytes(20)], "is invalid"),
    ("label without name", _answer(_mask_2d("a", binary_type="numeric_label_mask", label_map={"1": "x"})),
     [bytes([0, 1, 2, *[0] * 17])], "value(s) [2] have no label_map entry"),
    ("box on unknown image", _answer(bounding_boxes_2d=[{"SOPInstanceUID": "q", "top_left": [0, 0],
                                                         "bottom_right": [1, 1]}]), [], "bounding box 1"),
    ("box without corner", _answer(bounding_boxes_2d=[{"SOPInstanceUID": "a", "top_left": [0]}]), [],
     "top_left"),
    ("box outside", _answer(bounding_boxes_2d=[{"SOPInstanceUID": "a", "top_left": [0, 0],
                                                "bottom_right": [COLS, 1]}]), [], "outside"),
    ("boxes not a list", _answer(bounding_boxes_2d={"a": 1}), [], "'bounding_boxes_2d' is not a list"),
    ("bad coordinates type", _answer(linear_measurements_2d=[{"SOPInstanceUID": "a", "coordinates_type": "mm",
                                                              "start": [0, 0], "end": [1, 1]}]), [],
     "neither 'pixel' nor 'world'"),
    ("world in 2D", _answer(linear_measurements_2d=[{"SOPInstanceUID": "a", "coordinates_type": "world",
                                                     "start": [0, 0], "end": [1, 1]}]), [], "shown as text"),
    ("series json not object", _answer(series_ml_json=[1]), [], "'series_ml_json' is not an object"),
    ("series json unknown", _answer(series_ml_json={"Q": 1}), [], "'Q' is not a series"),
]


@pytest.mark.parametrize("answer, binaries, note", [case[1:] for case in BAD_ANSWERS],
                         ids=[case[0] for case in BAD_ANSWERS])
def test_protocol_violations_become_notes_not_exceptions(answer, binaries, note):
    study = _study(_image("a", "S", slice_index=0), _image("b", "S", slice_index=1))
    findings, notes = findings_for_study(study, answer, binaries, True)
    assert any(note in n for n in notes), notes
    for found in findings.values():
        for finding in found:
            if hasattr(finding, "mask"):
                assert finding.mask.shape == (ROWS, COLS)


# ---------------------------------------------------------------------------------------------------
# Files


def test_write_pngs_one_file_per_frame_in_send_order(tmp_path):
    write_standard_study(tmp_path / "study")
    study = load_study(tmp_path / "study")
    axial = next(images for images in study.series.values() if images[0].rows == 32)
    target = axial[2]
    answer = _answer(bounding_boxes_2d=[{"label": "nodule", "SOPInstanceUID": target.sop_instance_uid,
                                         "top_left": [5, 6], "bottom_right": [15, 12]}],
                     study_ml_json={"score": 2})
    findings, notes = findings_for_study(study, answer, [], True)
    assert notes == []

    paths = write_pngs(study, findings, tmp_path / "out")

    assert len(paths) == sum(image.frames for image in study.images) == 18
    # The frame with a finding drawn on it (the box; text is not a finding on the anatomy) also has a copy
    # with nothing drawn, under the same name in plain/.
    series_number = list(study.series.values()).index(axial) + 1
    assert [p.name for p in (tmp_path / "out" / "plain").iterdir()] == [
        f"series{series_number:02d}_slice0003_frame01.png"]
    assert [p.name for p in paths] == sorted(p.name for p in paths)
    assert all(re.fullmatch(r"series\d{2}_slice\d{4}_frame\d{2}\.png", p.name) for p in paths)
    series_number = list(study.series.values()).index(axial) + 1
    boxed = tmp_path / "out" / f"series{series_number:02d}_slice0003_frame01.png"
    with Image.open(boxed) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert img.width == 48 * 8 and img.height > 32 * 8  # the study_ml_json text is in a panel below
    assert pixels[6 * 8, 5 * 8].tolist() == [255, 255, 0]  # the box's top-left corner
    multiframe = next(i for i, images in enumerate(study.series.values(), 1) if images[0].frames == 5)
    assert [p.name for p in paths if p.name.startswith(f"series{multiframe:02d}")] == [
        f"series{multiframe:02d}_slice0001_frame{f:02d}.png" for f in range(1, 6)
    ]


def test_a_series_with_nothing_drawn_gets_a_note_saying_why(tmp_path):
    write_standard_study(tmp_path / "study")
    study = load_study(tmp_path / "study")
    boxed, misshapen, *untouched = list(study.series)
    first = study.series[boxed][0]
    answer = _answer({"label": "m", "binary_type": "boolean_mask", "SeriesInstanceUID": misshapen,
                      "binary_data_shape": {"timepoints": 1, "depth": 1, "height": 1, "width": 1}},
                     bounding_boxes_2d=[{"label": "b", "SOPInstanceUID": first.sop_instance_uid,
                                         "top_left": [1, 1], "bottom_right": [3, 3]}])
    findings, drawing_notes = findings_for_study(study, answer, [b"\x01"])
    assert drawing_notes  # the misshapen mask is not drawn, and a drawing note says why

    notes = series_notes(study, answer, findings)

    assert notes == {misshapen: "the answer names this series, but nothing of it could be drawn: see the "
                                "drawing notes",
                     **{uid: "the model did not annotate this series: nothing in its answer names it"
                        for uid in untouched}}
    text = summary(study, answer, ReceivedAnswer(""), findings, [], drawing_notes, tmp_path, [])
    assert "  series 3: the model did not annotate this series: nothing in its answer names it" in text
    assert "  series 1:" not in text
