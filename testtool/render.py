"""Draws a model's answer over the input images, so an author sees what the viewer would show.

Why pure functions on arrays: every overlay rule (threshold, palette interpolation, label colours, mask
orientation) is checked pixel by pixel in tests on tiny images, with no server and no files. Masks are
blended at the image's own resolution (one mask value = one image pixel, as in the viewer); the result
is then enlarged by an integer nearest-neighbour `scale`, and only then are boxes, lines and text drawn,
so that text stays legible on a 32x48 image.

`findings_for_study` is the one place where the protocol's answer meets the input: it slices 3D masks
with the protocol layout (timepoint, slice, row, column), refuses masks whose shape does not match the
images (a width/height swap must not look right here and wrong in the viewer), and turns everything it
cannot map into a plain-words note instead of an exception.

PNG names (`write_pngs`): ``series{SS}_slice{NNNN}_frame{FF}.png`` where SS is the 1-based position of
the series in send order, NNNN the 1-based position of the instance within its series in send order
(time point, then position along the slice normal) and FF the 1-based frame number. The widths are at
least 2, 4 and 2 digits and grow for the whole study when needed, so that sorting the names by plain
string comparison gives the send order. Instances without pixels (e.g. structured reports) get no PNG.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from testtool.study import InputImage, LoadedStudy, frame_pixels, to_display, window_linear

__all__ = [
    "BooleanMask", "Box", "Finding", "Heatmap", "LabelMask", "Measurement", "ProbabilityMask", "TextLines",
    "choose_scale", "draw_box", "draw_legend", "draw_measurement", "draw_text_lines", "findings_for_study",
    "label_colors", "measurement_length", "overlay_boolean", "overlay_heatmap", "overlay_labels",
    "overlay_probability", "palette_lookup", "render_image", "save_png", "window_linear", "write_pngs",
]

log = logging.getLogger(__name__)

Color = tuple[int, int, int]
MASK_ALPHA = 0.5
# One colour per mask part (by its index in `parts`), so that two masks on one image can be told apart.
MASK_COLORS: list[Color] = [
    (255, 0, 0), (0, 220, 0), (0, 128, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0),
]
# Twenty colours chosen to be told apart (Trubetskoy's list); more labels get generated hues.
DISTINCT_COLORS: list[Color] = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
]
DEFAULT_PALETTE = {
    "type": "anchorpoints",
    "data": [
        {"threshold": 0.0, "color": [0, 0, 255, 0]},
        {"threshold": 0.5, "color": [0, 255, 0, 128]},
        {"threshold": 1.0, "color": [255, 0, 0, 200]},
    ],
}
BOX_COLOR: Color = (255, 255, 0)
LINE_COLOR: Color = (0, 255, 255)
TEXT_COLOR: Color = (255, 255, 255)
MASK_TYPES = ("probability_mask", "boolean_mask", "heatmap", "numeric_label_mask")
DICOM_TYPES = ("dicom_secondary_capture", "dicom", "dicom_structured_report", "dicom_gsps")


# ---------------------------------------------------------------------------------------------------
# Findings: what to draw on one image frame


@dataclass(frozen=True, eq=False)
class ProbabilityMask:
    mask: np.ndarray  # uint8 (rows, cols), 0..255 = probability 0..1
    label: str = ""
    threshold: float = 0.5
    color: Color = (255, 0, 0)
    kind: ClassVar[str] = "probability"


@dataclass(frozen=True, eq=False)
class BooleanMask:
    mask: np.ndarray
    label: str = ""
    color: Color = (0, 220, 0)
    kind: ClassVar[str] = "boolean"


@dataclass(frozen=True, eq=False)
class Heatmap:
    mask: np.ndarray
    label: str = ""
    palette: dict | None = None  # anchorpoints palette; None = DEFAULT_PALETTE
    kind: ClassVar[str] = "heatmap"


@dataclass(frozen=True, eq=False)
class LabelMask:
    mask: np.ndarray
    label_map: dict[str, str]
    label: str = ""
    kind: ClassVar[str] = "labels"


@dataclass(frozen=True)
class Box:
    top_left: tuple[float, float]  # [col, row]
    bottom_right: tuple[float, float]
    label: str = ""
    color: Color = BOX_COLOR
    kind: ClassVar[str] = "box"


@dataclass(frozen=True)
class Measurement:
    start: tuple[float, float]  # pixel space [x = col, y = row]
    end: tuple[float, float]
    label: str = ""
    length_text: str = ""
    color: Color = LINE_COLOR
    kind: ClassVar[str] = "measurement"


@dataclass(frozen=True)
class TextLines:
    lines: tuple[str, ...]
    kind: ClassVar[str] = "text"


Finding = ProbabilityMask | BooleanMask | Heatmap | LabelMask | Box | Measurement | TextLines


# ---------------------------------------------------------------------------------------------------
# Mask overlays (numpy, at image resolution)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image.astype(np.uint8, copy=True)


def _blend(base: np.ndarray, color, alpha) -> np.ndarray:
    """(1 - alpha) * base + alpha * color, rounded half up (the tests compute the same by hand)."""
    mixed = base.astype(np.float64) * (1.0 - alpha) + np.asarray(color, dtype=np.float64) * alpha
    return np.clip(np.floor(mixed + 0.5), 0, 255).astype(np.uint8)


def _check_shape(rgb: np.ndarray, mask: np.ndarray) -> None:
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask is {mask.shape[0]}x{mask.shape[1]}, image is {rgb.shape[0]}x{rgb.shape[1]}")


def overlay_probability(rgb, mask_u8, threshold: float = 0.5, color: Color = (255, 0, 0), alpha: float = 0.5):
    """Pixels whose probability (mask / 255) reaches `threshold` get `color` blended in."""
    rgb, mask = _as_rgb(rgb), np.asarray(mask_u8)
    _check_shape(rgb, mask)
    chosen = mask.astype(np.float64) / 255.0 >= threshold
    rgb[chosen] = _blend(rgb[chosen], color, alpha)
    return rgb


def overlay_boolean(rgb, mask, color: Color = (0, 220, 0), alpha: float = 0.5):
    """Every non-zero mask pixel gets `color` blended in."""
    rgb, mask = _as_rgb(rgb), np.asarray(mask)
    _check_shape(rgb, mask)
    chosen = mask != 0
    rgb[chosen] = _blend(rgb[chosen], color, alpha)
    return rgb


def palette_lookup(palette_json: dict) -> np.ndarray:
    """(256, 4) uint8 RGBA table: value v is probability v/255, colours interpolated between anchorpoints.

    Raises ValueError with a plain reason for a palette the protocol does not allow.
    """
    if not isinstance(palette_json, dict) or not isinstance(palette_json.get("data"), list):
        raise ValueError("a palette is {type: 'anchorpoints', data: [{threshold, color}, ...]}")
    if palette_json.get("type", "anchorpoints") != "anchorpoints":
        raise ValueError(f"palette type {palette_json.get('type')!r} is not 'anchorpoints'")
    points = []
    for point in palette_json["data"]:
        try:
            threshold = float(point["threshold"])
            color = [int(c) for c in point["color"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"anchorpoint {point!r} needs a numeric threshold and a colour") from exc
        if len(color) != 4 or not all(0 <= c <= 255 for c in color) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"anchorpoint {point!r}: threshold 0..1 and four colour values 0..255")
        points.append((threshold, color))
    if len(points) < 2:
        raise ValueError("a palette needs at least two anchorpoints")
    points.sort(key=lambda p: p[0])
    thresholds = np.array([p[0] for p in points])
    colors = np.array([p[1] for p in points], dtype=np.float64)
    t = np.arange(256) / 255.0
    table = np.stack([np.interp(t, thresholds, colors[:, channel]) for channel in range(4)], axis=1)
    return np.clip(np.floor(table + 0.5), 0, 255).astype(np.uint8)


def overlay_heatmap(rgb, mask_u8, palette_json: dict | None = None):
    """Each pixel takes its palette colour, composited with the palette's own alpha."""
    rgb, mask = _as_rgb(rgb), np.asarray(mask_u8, dtype=np.uint8)
    _check_shape(rgb, mask)
    rgba = palette_lookup(palette_json or DEFAULT_PALETTE)[mask]
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    return _blend(rgb, rgba[..., :3], alpha)


def label_colors(label_map: dict[str, str]) -> dict[int, Color]:
    """A distinct colour per class, by rank of the class number: the same map always gets the same colours."""
    keys = sorted(int(k) for k in label_map if str(k).isdigit())
    colors: dict[int, Color] = {}
    used: set[Color] = set()
    hue, step = 0.0, 0
    for rank, key in enumerate(keys):
        if rank < len(DISTINCT_COLORS):
            color = DISTINCT_COLORS[rank]
        else:
            while True:  # golden-angle hues, cycling saturation/value, skipping any repeat
                hue = (hue + 0.618033988749895) % 1.0
                step += 1
                saturation, value = (0.95, 0.6, 0.8)[step % 3], (1.0, 0.75, 0.9)[step // 3 % 3]
                r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
                color = (round(r * 255), round(g * 255), round(b * 255))
                if color not in used:
                    break
        used.add(color)
        colors[key] = color
    return colors


def overlay_labels(rgb, mask_u8, colors: dict[int, Color], alpha: float = 0.5):
    """Each class value gets its colour blended in; 0 and values without a colour stay untouched."""
    rgb, mask = _as_rgb(rgb), np.asarray(mask_u8)
    _check_shape(rgb, mask)
    for value, color in colors.items():
        chosen = mask == value
        if chosen.any():
            rgb[chosen] = _blend(rgb[chosen], color, alpha)
    return rgb


# ---------------------------------------------------------------------------------------------------
# Vector drawing (PIL, after enlarging)


@lru_cache(maxsize=4)
def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy, text: str, fill=TEXT_COLOR) -> None:
    """White text with a black outline: readable on any background."""
    draw.text(xy, text, fill=fill, font=_font(), stroke_width=1, stroke_fill=(0, 0, 0))


def _text_size(text: str) -> tuple[int, int]:
    left, top, right, bottom = _font().getbbox(text or " ", stroke_width=1)
    return int(right - left), int(bottom - min(top, 0))


def _fit(text: str, width: int) -> str:
    """Shortens `text` with an ellipsis until it fits `width` pixels."""
    text = text if len(text) <= 400 else text[:400]  # no canvas shows more; keeps the loop short
    if _text_size(text)[0] <= width:
        return text
    while text and _text_size(text + "…")[0] > width:
        text = text[:-1]
    return text + "…"


def draw_box(img: Image.Image, top_left, bottom_right, color: Color = BOX_COLOR, label: str | None = None,
             scale: int = 1, width: int | None = None) -> Image.Image:
    """Outlines the pixels top_left..bottom_right ([col, row], inclusive, image pixel space).

    At `scale` s the outline runs along the outer edge of those pixels' s x s blocks.
    """
    (c0, c1), (r0, r1) = (sorted((round(top_left[0]), round(bottom_right[0]))),
                          sorted((round(top_left[1]), round(bottom_right[1]))))
    x0, y0, x1, y1 = c0 * scale, r0 * scale, (c1 + 1) * scale - 1, (r1 + 1) * scale - 1
    draw = ImageDraw.Draw(img)
    draw.rectangle([x0, y0, x1, y1], outline=tuple(color), width=width or (1 if scale < 4 else 2))
    if label:
        text = _fit(label, max(img.width - max(x0, 0) - 2, 20))
        height = _text_size(text)[1]
        y = y0 - height - 3 if y0 - height - 3 >= 0 else y1 + 3
        _text(draw, (max(x0, 0), min(max(y, 0), img.height - height - 1)), text, fill=tuple(color))
    return img


def _canvas_point(point, scale: int) -> tuple[float, float]:
    """Pixel coordinate -> enlarged canvas, integer coordinates landing on the centre of their block."""
    return float(point[0]) * scale + (scale - 1) / 2, float(point[1]) * scale + (scale - 1) / 2


def draw_measurement(img: Image.Image, start, end, label: str = "", length_text: str = "",
                     color: Color = LINE_COLOR, scale: int = 1) -> Image.Image:
    """A line from start to end ([x = col, y = row] pixel space) with end marks and its length as text."""
    draw = ImageDraw.Draw(img)
    p0, p1 = _canvas_point(start, scale), _canvas_point(end, scale)
    draw.line([p0, p1], fill=tuple(color), width=1 if scale < 4 else 2)
    if scale >= 4:
        for x, y in (p0, p1):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=tuple(color))
    text = ": ".join(t for t in (label, length_text) if t)
    if text:
        text = _fit(text, img.width - 4)
        w, h = _text_size(text)
        x = min(max(p1[0] + 4, 0), img.width - w - 2)
        y = min(max(p1[1] - h - 4, 0), img.height - h - 2)
        _text(draw, (x, y), text, fill=tuple(color))
    return img


def measurement_length(start, end, coordinates_type: str, pixel_spacing) -> tuple[float, str]:
    """(length, unit). Pixel coordinates use PixelSpacing = [row spacing, column spacing] (mm) when known,
    else stay in px; world coordinates are already mm."""
    if coordinates_type == "world":
        a, b = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        return float(np.linalg.norm(b - a)), "mm"
    if coordinates_type != "pixel":
        raise ValueError(f"coordinates_type {coordinates_type!r} is neither 'pixel' nor 'world'")
    dx, dy = float(end[0]) - float(start[0]), float(end[1]) - float(start[1])
    if pixel_spacing:
        row_spacing, col_spacing = float(pixel_spacing[0]), float(pixel_spacing[1])
        return math.hypot(dx * col_spacing, dy * row_spacing), "mm"
    return math.hypot(dx, dy), "px"


def draw_text_lines(img: Image.Image, lines, origin=(4, 4)) -> Image.Image:
    """Classification results, one per line from the top-left; what does not fit ends with an ellipsis."""
    draw = ImageDraw.Draw(img)
    x, y = origin
    line_height = _text_size("Hg")[1] + 3
    lines = list(lines)
    for index, line in enumerate(lines):
        if y + 2 * line_height > img.height and index < len(lines) - 1:
            _text(draw, (x, y), "…")
            break
        _text(draw, (x, y), _fit(str(line), img.width - x - 2))
        y += line_height
    return img


def _draw_legend_entries(img: Image.Image, entries: list[tuple[str, Color]]) -> Image.Image:
    """Colour swatch + name per entry, stacked from the bottom-left corner up."""
    if not entries:
        return img
    draw = ImageDraw.Draw(img)
    line_height = _text_size("Hg")[1] + 4
    y = img.height - 4 - line_height * len(entries)
    for name, color in entries:
        if y >= 0:
            size = line_height - 4
            draw.rectangle([4, y + 2, 4 + size, y + 2 + size], fill=tuple(color), outline=(0, 0, 0))
            _text(draw, (8 + size, y), _fit(name, img.width - size - 12))
        y += line_height
    return img


def draw_legend(img: Image.Image, label_map: dict[str, str], colors: dict[int, Color]) -> Image.Image:
    """Legend of a numeric label mask: class colour and name, in class order."""
    entries = [(str(label_map[k]), colors[int(k)]) for k in sorted(label_map, key=_class_number)
               if str(k).isdigit() and int(k) in colors]
    return _draw_legend_entries(img, entries)


def _class_number(key) -> float:
    return int(key) if str(key).isdigit() else math.inf


# ---------------------------------------------------------------------------------------------------
# One image


def choose_scale(rows: int, cols: int, target: int = 256, limit: int = 2048) -> int:
    """Smallest integer enlargement bringing the short side to `target` px, the long side kept <= `limit`."""
    scale = max(1, math.ceil(target / max(1, min(rows, cols))))
    while scale > 1 and max(rows, cols) * scale > limit:
        scale -= 1
    return scale


def render_image(display_u8: np.ndarray, findings: list[Finding], scale: int = 1) -> Image.Image:
    """Masks at image resolution, enlarge by `scale` (nearest neighbour), then boxes, lines, legend, text."""
    rgb = _as_rgb(display_u8)
    legend: list[tuple[str, Color]] = []
    for finding in findings:
        if isinstance(finding, ProbabilityMask):
            rgb = overlay_probability(rgb, finding.mask, finding.threshold, finding.color, MASK_ALPHA)
            legend.append((finding.label or "probability mask", finding.color))
        elif isinstance(finding, BooleanMask):
            rgb = overlay_boolean(rgb, finding.mask, finding.color, MASK_ALPHA)
            legend.append((finding.label or "boolean mask", finding.color))
        elif isinstance(finding, Heatmap):
            palette = finding.palette or DEFAULT_PALETTE
            rgb = overlay_heatmap(rgb, finding.mask, palette)
            top = tuple(int(c) for c in palette_lookup(palette)[255, :3])  # the colour of probability 1
            legend.append((finding.label or "heatmap", top))
        elif isinstance(finding, LabelMask):
            colors = label_colors(finding.label_map)
            rgb = overlay_labels(rgb, finding.mask, colors, MASK_ALPHA)
            legend.extend((str(finding.label_map[k]), colors[int(k)])
                          for k in sorted(finding.label_map, key=_class_number) if str(k).isdigit())
    scale = max(1, int(scale))
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    img = Image.fromarray(rgb)
    for finding in findings:
        if isinstance(finding, Box):
            draw_box(img, finding.top_left, finding.bottom_right, finding.color, finding.label, scale=scale)
        elif isinstance(finding, Measurement):
            draw_measurement(img, finding.start, finding.end, finding.label, finding.length_text,
                             finding.color, scale=scale)
    _draw_legend_entries(img, legend)
    lines = [line for finding in findings if isinstance(finding, TextLines) for line in finding.lines]
    if lines:
        draw_text_lines(img, lines)
    return img


def save_png(img: Image.Image | np.ndarray, path: Path) -> Path:
    """The only file write of this module."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    path = Path(path)
    img.save(path, format="PNG")
    return path


# ---------------------------------------------------------------------------------------------------
# The protocol answer -> findings per (SOPInstanceUID, 0-based frame index)


class _Skip(Exception):
    """Something in the answer that cannot be drawn; its message becomes a note."""


FindingMap = dict[tuple[str, int], list[Finding]]


def findings_for_study(study: LoadedStudy, result_json: dict, binaries: list[bytes],
                       draw_labels: bool = False) -> tuple[FindingMap, list[str]]:
    """Maps an answer onto the input images: ({(sop_uid, frame_index): findings}, notes).

    frame_index is 0-based (the protocol's frame_number minus one). Never raises for a bad answer.
    """
    findings: dict[tuple[str, int], list[Finding]] = defaultdict(list)
    notes: list[str] = []
    if not isinstance(result_json, dict):
        return {}, ["the result is not a JSON object: nothing drawn"]
    by_sop = {image.sop_instance_uid: image for image in study.images}
    _map_parts(study, by_sop, result_json, list(binaries or []), findings, notes)
    _map_boxes(by_sop, result_json, findings, notes)
    _map_measurements(by_sop, result_json, findings, notes)
    if draw_labels:
        _map_ml_json(study, result_json, findings, notes)
    return dict(findings), notes


def _map_parts(study, by_sop, result_json, binaries, findings, notes) -> None:
    parts = result_json.get("parts", [])
    if not isinstance(parts, list):
        notes.append("'parts' is not a list: no mask drawn")
        return
    if len(parts) != len(binaries):
        notes.append(
            f"{len(parts)} part(s) but {len(binaries)} binary part(s): each entry of 'parts' is paired with "
            "the binary at the same position, so masks after a missing binary may be drawn from the wrong one"
        )
    palettes = result_json.get("palettes") if isinstance(result_json.get("palettes"), dict) else {}
    for index, (part, data) in enumerate(zip(parts, binaries, strict=False)):
        label = str(part.get("label", "")) if isinstance(part, dict) else ""
        name = f"part {index + 1}" + (f" ({label})" if label else "")
        try:
            _map_part(study, by_sop, part, data, index, palettes, findings, notes, name)
        except _Skip as skip:
            notes.append(f"{name}: {skip}; not drawn")


def _map_part(study, by_sop, part, data, index, palettes, findings, notes, name) -> None:
    if not isinstance(part, dict):
        raise _Skip("not a JSON object")
    binary_type = part.get("binary_type")
    if binary_type in DICOM_TYPES:
        return  # DICOM outputs are files for the archive, not overlays
    if binary_type not in MASK_TYPES:
        raise _Skip(f"unknown binary_type {binary_type!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _Skip("its binary is not bytes")
    shape = part.get("binary_data_shape")
    if not isinstance(shape, dict):
        raise _Skip("no binary_data_shape object")
    make = _mask_maker(part, binary_type, index, palettes, notes, name, data)
    if "depth" in shape or "timepoints" in shape or "SeriesInstanceUID" in part:
        for image, frame, mask in _slices_3d(study, part, shape, data):
            findings[(image.sop_instance_uid, frame)].append(make(mask))
    elif "dicom_image" in part:
        image, frame = _target(part.get("dicom_image"), by_sop)
        height, width = _dimension(shape, "height"), _dimension(shape, "width")
        if len(data) != height * width:
            raise _Skip(f"{len(data)} bytes, but height*width = {height}*{width} = {height * width}")
        _check_plane(image, height, width)
        findings[(image.sop_instance_uid, frame)].append(make(_as_mask(data, (height, width))))
    else:
        raise _Skip("neither a SeriesInstanceUID (3D mask) nor a dicom_image (2D mask)")


def _slices_3d(study: LoadedStudy, part: dict, shape: dict, data):
    """(image, frame, mask) per slice: the mask is (timepoints, depth, height, width) in C order."""
    series_uid = part.get("SeriesInstanceUID")
    if series_uid not in study.series:
        raise _Skip(f"SeriesInstanceUID {series_uid!r} is not a series of the study")
    timepoints = _dimension(shape, "timepoints") if "timepoints" in shape else 1
    depth, height, width = (_dimension(shape, key) for key in ("depth", "height", "width"))
    expected = timepoints * depth * height * width
    if len(data) != expected:
        raise _Skip(f"{len(data)} bytes, but timepoints*depth*height*width = {expected}")
    series_timepoints, series_depth = study.series_shape(series_uid)
    if (timepoints, depth) != (series_timepoints, series_depth):
        raise _Skip(
            f"timepoints={timepoints}, depth={depth}, but the series has {series_timepoints} time point(s) "
            f"of {series_depth} slice(s)"
        )
    images = [image for image in study.series[series_uid] if image.has_pixels]
    for image in images:
        _check_plane(image, height, width)
    volume = _as_mask(data, (timepoints, depth, height, width))
    for image in images:
        for frame in range(image.frames):
            yield image, frame, volume[image.timepoint, image.slice_index + frame]


def _as_mask(data, shape) -> np.ndarray:
    # No copy: the tool hands over masks mapped from their files, which can be hundreds of MiB.
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _check_plane(image: InputImage, height: int, width: int) -> None:
    if (height, width) == (image.rows, image.cols):
        return
    hint = " (width and height look swapped)" if (height, width) == (image.cols, image.rows) else ""
    raise _Skip(
        f"height x width = {height}x{width}, but the image has {image.rows} rows x {image.cols} columns{hint}"
    )


def _dimension(shape: dict, key: str) -> int:
    value = shape.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Skip(f"binary_data_shape.{key} is {value!r}, not a positive integer")
    return value


def _mask_maker(part, binary_type, index, palettes, notes, name, data):
    """A function mask -> Finding for this part, after checking its per-type metadata once."""
    label = str(part.get("label", ""))
    color = MASK_COLORS[index % len(MASK_COLORS)]
    if binary_type == "probability_mask":
        threshold = part.get("probability_threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            notes.append(f"{name}: probability_threshold {threshold!r} is not a number in 0..1; 0.5 used")
            threshold = 0.5
        return lambda mask: ProbabilityMask(mask, label, float(threshold), color)
    if binary_type == "boolean_mask":
        return lambda mask: BooleanMask(mask, label, color)
    if binary_type == "heatmap":
        palette = _palette(part, palettes, notes, name)
        return lambda mask: Heatmap(mask, label, palette)
    label_map = part.get("label_map")
    if not isinstance(label_map, dict) or not label_map or not all(str(k).isdigit() for k in label_map):
        notes.append(f"{name}: label_map {label_map!r} is not an object with digit keys; class numbers shown")
        label_map = {}
    present = np.flatnonzero(np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256))
    missing = [int(v) for v in present if v and str(int(v)) not in label_map]
    if missing and label_map:
        notes.append(f"{name}: value(s) {missing} have no label_map entry; those pixels are not drawn")
    elif missing:
        label_map = {str(v): f"class {v}" for v in missing}
    return lambda mask: LabelMask(mask, {str(k): str(v) for k, v in label_map.items()}, label)


def _palette(part, palettes, notes, name) -> dict:
    reference = part.get("palette")
    if reference is None:
        return DEFAULT_PALETTE
    palette = reference if isinstance(reference, dict) else palettes.get(reference)
    if palette is None:
        notes.append(f"{name}: palette {reference!r} is not in the top-level 'palettes'; default used")
        return DEFAULT_PALETTE
    try:
        palette_lookup(palette)
    except ValueError as exc:
        notes.append(f"{name}: palette {reference!r} is invalid ({exc}); default palette used")
        return DEFAULT_PALETTE
    return palette


def _target(reference, by_sop) -> tuple[InputImage, int]:
    """(image, 0-based frame) named by {SOPInstanceUID, frame_number?}."""
    if not isinstance(reference, dict):
        raise _Skip("the image reference is not an object")
    image = by_sop.get(reference.get("SOPInstanceUID"))
    if image is None:
        raise _Skip(f"SOPInstanceUID {reference.get('SOPInstanceUID')!r} is not an input image")
    frame_number = reference.get("frame_number", 1)
    if frame_number is None:
        frame_number = 1
    valid = isinstance(frame_number, int) and not isinstance(frame_number, bool)
    if not valid or not 0 < frame_number <= image.frames:
        raise _Skip(f"frame_number {frame_number!r} is not in 1..{image.frames}")
    return image, frame_number - 1


def _point(value, name: str, size: int = 2) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) < size or not all(math.isfinite(v) for v in numbers):
        raise _Skip(f"{name} {value!r} is not a list of {size} numbers")
    return numbers


def _items(result_json, key, notes) -> list:
    items = result_json.get(key, [])
    if items is None:
        return []
    if not isinstance(items, list):
        notes.append(f"'{key}' is not a list: not drawn")
        return []
    return items


def _map_boxes(by_sop, result_json, findings, notes) -> None:
    for number, item in enumerate(_items(result_json, "bounding_boxes_2d", notes), start=1):
        try:
            image, frame = _target(item, by_sop)
            top_left = _point(item.get("top_left"), "top_left")[:2]
            bottom_right = _point(item.get("bottom_right"), "bottom_right")[:2]
        except _Skip as skip:
            notes.append(f"bounding box {number}: {skip}; not drawn")
            continue
        inside = all(0 <= p[0] < image.cols and 0 <= p[1] < image.rows for p in (top_left, bottom_right))
        if not inside:
            notes.append(f"bounding box {number}: corners {list(top_left)}, {list(bottom_right)} are outside "
                         f"the {image.cols}x{image.rows} (columns x rows) image")
        box = Box(top_left, bottom_right, str(item.get("label", "")))
        findings[(image.sop_instance_uid, frame)].append(box)


def _map_measurements(by_sop, result_json, findings, notes) -> None:
    for number, item in enumerate(_items(result_json, "linear_measurements_2d", notes), start=1):
        try:
            image, frame = _target(item, by_sop)
            kind = item.get("coordinates_type", "pixel")
            start, end = _point(item.get("start"), "start"), _point(item.get("end"), "end")
            value, unit = measurement_length(start, end, kind, image.pixel_spacing)
        except (_Skip, ValueError) as problem:
            notes.append(f"linear measurement {number}: {problem}; not drawn")
            continue
        label, text = str(item.get("label", "")), f"{value:.1f} {unit}"
        if kind == "world":
            placed = _world_to_pixel(image, start), _world_to_pixel(image, end)
            if None in placed:
                notes.append(f"linear measurement {number}: world coordinates need x, y, z and the image's "
                             "position, orientation and pixel spacing to be placed; shown as text only")
                findings[(image.sop_instance_uid, frame)].append(TextLines((f"{label}: {text}",)))
                continue
            start, end = placed
        findings[(image.sop_instance_uid, frame)].append(Measurement(start[:2], end[:2], label, text))


def _world_to_pixel(image: InputImage, point) -> tuple[float, float] | None:
    """Patient coordinates (mm) -> [col, row] on the image plane (the normal component is dropped)."""
    if len(point) != 3 or not (image.position and image.orientation and image.pixel_spacing):
        return None
    offset = np.asarray(point, dtype=np.float64) - np.asarray(image.position)
    along_row, along_col = np.asarray(image.orientation[:3]), np.asarray(image.orientation[3:])
    row_spacing, col_spacing = image.pixel_spacing
    return float(offset @ along_row) / col_spacing, float(offset @ along_col) / row_spacing


def _json_lines(prefix: str, value) -> list[str]:
    """Free JSON as short lines; strings without quotes, everything else as JSON (1 stays 1)."""
    def show(v):
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

    if isinstance(value, dict):
        return [f"{prefix}{key}: {show(v)}" for key, v in value.items()]
    if isinstance(value, list):
        return [f"{prefix}{show(v)}" for v in value]
    return [f"{prefix}{show(value)}"]


def _map_ml_json(study: LoadedStudy, result_json, findings, notes) -> None:
    if result_json.get("study_ml_json") is not None:
        lines = tuple(_json_lines("study · ", result_json["study_ml_json"]))
        for image in study.images:
            for frame in range(image.frames):
                findings[(image.sop_instance_uid, frame)].append(TextLines(lines))
    series_json = result_json.get("series_ml_json")
    if series_json is None:
        return
    if not isinstance(series_json, dict):
        notes.append("'series_ml_json' is not an object keyed by SeriesInstanceUID: not shown")
        return
    for series_uid, value in series_json.items():
        if series_uid not in study.series:
            notes.append(f"series_ml_json: {series_uid!r} is not a series of the study; not shown")
            continue
        lines = tuple(_json_lines("series · ", value))
        for image in study.series[series_uid]:
            for frame in range(image.frames):
                findings[(image.sop_instance_uid, frame)].append(TextLines(lines))


# ---------------------------------------------------------------------------------------------------
# Files


def write_pngs(study: LoadedStudy, findings: FindingMap, out_dir: Path) -> list[Path]:
    """One PNG per frame of every input image (naming scheme in the module docstring)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series_width = max(2, len(str(len(study.series))))
    slice_width = max([4, *(len(str(len(images))) for images in study.series.values())])
    frame_width = max([2, *(len(str(image.frames)) for image in study.images)])
    written: list[Path] = []
    for series_number, images in enumerate(study.series.values(), start=1):
        for slice_number, image in enumerate(images, start=1):
            if not image.has_pixels:
                continue
            for frame in range(image.frames):
                try:
                    display = to_display(image, frame_pixels(image, frame), frame)
                except Exception as exc:  # noqa: BLE001 - one undecodable image must not stop the others
                    log.warning("cannot decode %s frame %d: %s", image.source, frame + 1, exc)
                    continue
                picture = render_image(display, findings.get((image.sop_instance_uid, frame), []),
                                       scale=choose_scale(*display.shape[:2]))
                name = (f"series{series_number:0{series_width}d}_slice{slice_number:0{slice_width}d}"
                        f"_frame{frame + 1:0{frame_width}d}.png")
                written.append(save_png(picture, out_dir / name))
    return written
