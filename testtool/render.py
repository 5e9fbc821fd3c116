"""The pictures a model author looks at: one PNG per input frame with every finding drawn, one contact
sheet per series.

Why this order of drawing: masks are blended at the image's own resolution (testtool.overlay: one mask
value = one image pixel, as in the viewer), the result is enlarged by an integer nearest-neighbour
`scale`, and only then are boxes and lines drawn (testtool.drawing), so that text stays legible on a
32x48 image. Legend and classification text go in a panel below the image, never over the anatomy.

PNG names (`write_pngs`): ``series{SS}_slice{NNNN}_frame{FF}.png`` where SS is the 1-based position of
the series in send order, NNNN the 1-based position of the instance within its series in send order
(time point, then position along the slice normal) and FF the 1-based frame number. The widths are at
least 2, 4 and 2 digits and grow for the whole study when needed, so that sorting the names by plain
string comparison gives the send order. Instances without pixels (e.g. structured reports) get no PNG.
Contact sheets are ``series{SS}_sheet.png``; each frame with findings also has its plain copy (nothing
drawn) under the same name in ``plain/``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from testtool.display import frame_pixels, to_display
from testtool.drawing import add_panel, draw_box, draw_measurement, legend_for_labels
from testtool.findings import (
    BooleanMask,
    Box,
    Finding,
    FindingMap,
    Heatmap,
    LabelMask,
    Measurement,
    ProbabilityMask,
    TextLines,
)
from testtool.overlay import (
    DEFAULT_PALETTE,
    MASK_ALPHA,
    Color,
    as_rgb,
    overlay_boolean,
    overlay_heatmap,
    overlay_labels,
    overlay_probability,
    palette_lookup,
)
from testtool.sheets import Tile, contact_sheet, tile_size
from testtool.study import InputImage, LoadedStudy

log = logging.getLogger(__name__)

SHEET_FILE = "series{}_sheet.png"
PLAIN_DIR = "plain"  # frames with findings, with nothing drawn, under the same names


def choose_scale(rows: int, cols: int, target: int = 256, limit: int = 2048) -> int:
    """Smallest integer enlargement bringing the short side to `target` px, the long side kept <= `limit`."""
    scale = max(1, math.ceil(target / max(1, min(rows, cols))))
    while scale > 1 and max(rows, cols) * scale > limit:
        scale -= 1
    return scale


@dataclass
class Rendered:
    """One frame drawn: `image` holds the anatomy and what lies on it, the rest goes in the panel."""

    image: Image.Image  # masks blended, enlarged, boxes and lines drawn
    legend: list[tuple[str, Color]]  # (name, colour) of every mask on the frame
    lines: list[str]  # classification text and measurements that could not be placed

    def picture(self) -> Image.Image:
        return add_panel(self.image, self.legend, self.lines)


def render_frame(display_u8: np.ndarray, findings: list[Finding], scale: int = 1, outline: bool = False) -> Rendered:
    """Masks at image resolution (filled, or only their outlines), enlarge by `scale` (nearest neighbour),
    then boxes and lines. Heatmaps are always filled: their colour is the value."""
    rgb = as_rgb(display_u8)
    legend: list[tuple[str, Color]] = []
    for finding in findings:
        if isinstance(finding, ProbabilityMask):
            rgb = overlay_probability(rgb, finding.mask, finding.threshold, finding.color, MASK_ALPHA, outline)
            legend.append((finding.label or "probability mask", finding.color))
        elif isinstance(finding, BooleanMask):
            rgb = overlay_boolean(rgb, finding.mask, finding.color, MASK_ALPHA, outline)
            legend.append((finding.label or "boolean mask", finding.color))
        elif isinstance(finding, Heatmap):
            palette = finding.palette or DEFAULT_PALETTE
            rgb = overlay_heatmap(rgb, finding.mask, palette)
            top = tuple(int(c) for c in palette_lookup(palette)[255, :3])  # the colour of probability 1
            legend.append((finding.label or "heatmap", top))
        elif isinstance(finding, LabelMask):
            rgb = overlay_labels(rgb, finding.mask, finding.colors, MASK_ALPHA, outline)
            legend.extend(legend_for_labels(finding.label_map, finding.colors))
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
    lines = [line for finding in findings if isinstance(finding, TextLines) for line in finding.lines]
    return Rendered(img, legend, lines)


def render_image(display_u8: np.ndarray, findings: list[Finding], scale: int = 1, outline: bool = False) -> Image.Image:
    """The PNG of one frame: `render_frame`, with its legend and text in a panel below the image."""
    return render_frame(display_u8, findings, scale, outline).picture()


def save_png(img: Image.Image | np.ndarray, path: Path) -> Path:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    path = Path(path)
    img.save(path, format="PNG")
    return path


# ---------------------------------------------------------------------------------------------------
# Files


@dataclass
class FramePicture:
    """One written per-frame PNG, as the report lists it."""

    path: Path
    image: InputImage
    slice_number: int  # 1-based position of the instance in its series (send order)
    frame: int  # 0-based
    has_findings: bool
    plain: Path | None = None  # the same frame with nothing drawn (PLAIN_DIR), written for frames with findings


@dataclass
class SeriesPictures:
    uid: str
    number: int  # 1-based position in send order
    frames: list[FramePicture] = field(default_factory=list)
    sheet: Path | None = None
    legend: list[tuple[str, Color]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # frames that could not be decoded, and why


def write_pngs(study: LoadedStudy, findings: FindingMap, out_dir: Path) -> list[Path]:
    """One PNG per frame of every input image (naming scheme in the module docstring)."""
    return [picture.path for series in write_pictures(study, findings, out_dir, sheets=False)
            for picture in series.frames]


def write_pictures(study: LoadedStudy, findings: FindingMap, out_dir: Path, sheets: bool = True,
                   outline: bool = False) -> list[SeriesPictures]:
    """The per-frame PNGs and, with `sheets`, one contact sheet per series holding all of its frames; for
    each frame with findings, the same frame with nothing drawn in PLAIN_DIR (the report shows them side by
    side, so that the tissue under a mask can be seen). `outline` draws masks as outlines.

    A series is drawn completely before the next, and only its small tiles are kept until its sheet is
    written, so memory does not grow with the study.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    widths = _name_widths(study)
    written = []
    for number, (uid, images) in enumerate(study.series.items(), start=1):
        series = SeriesPictures(uid, number)
        frame_total = sum(image.frames for image in images if image.has_pixels)
        tiles: list[Tile] = []
        timepoints = study.series_shape(uid)[0]
        for slice_number, image, frame in _frames(images):
            found = findings.get((image.sop_instance_uid, frame), [])
            try:
                display = to_display(image, frame_pixels(image, frame), frame)
            except Exception as exc:  # noqa: BLE001 - one undecodable image must not stop the others
                log.warning("cannot decode %s frame %d: %s", image.source, frame + 1, exc)
                series.failures.append(f"{image.source.name} frame {frame + 1}: {exc}")
                continue
            scale = choose_scale(*display.shape[:2])
            rendered = render_frame(display, found, scale=scale, outline=outline)
            name = png_name(widths, number, slice_number, frame)
            path = save_png(rendered.picture(), out_dir / name)
            drawn = any(not isinstance(item, TextLines) for item in found)
            plain = save_png(render_frame(display, [], scale).image, _plain_dir(out_dir) / name) if drawn else None
            series.frames.append(FramePicture(path, image, slice_number, frame, drawn, plain))
            series.legend.extend(item for item in rendered.legend if item not in series.legend)
            if sheets:
                caption = _caption(image, slice_number, frame, timepoints)
                tiles.append(Tile(_thumbnail(rendered.image, tile_size(frame_total)), caption, drawn))
        if sheets and tiles:
            title = _series_title(number, images, len(series.frames))
            sheet = contact_sheet(tiles, [title, f"SeriesInstanceUID {uid}"], series.legend)
            series.sheet = save_png(sheet, out_dir / SHEET_FILE.format(f"{number:0{widths[0]}d}"))
        written.append(series)
    return written


def _plain_dir(out_dir: Path) -> Path:
    folder = out_dir / PLAIN_DIR
    folder.mkdir(exist_ok=True)
    return folder


def png_name(widths: tuple[int, int, int], series_number: int, slice_number: int, frame: int) -> str:
    series_width, slice_width, frame_width = widths
    return (f"series{series_number:0{series_width}d}_slice{slice_number:0{slice_width}d}"
            f"_frame{frame + 1:0{frame_width}d}.png")


def _name_widths(study: LoadedStudy) -> tuple[int, int, int]:
    series_width = max(2, len(str(len(study.series))))
    slice_width = max([4, *(len(str(len(images))) for images in study.series.values())])
    frame_width = max([2, *(len(str(image.frames)) for image in study.images)])
    return series_width, slice_width, frame_width


def _frames(images: list[InputImage]) -> Iterator[tuple[int, InputImage, int]]:
    for slice_number, image in enumerate(images, start=1):
        if image.has_pixels:
            for frame in range(image.frames):
                yield slice_number, image, frame


def _caption(image: InputImage, slice_number: int, frame: int, timepoints: int) -> str:
    text = str(slice_number) if image.frames == 1 else f"{slice_number} f{frame + 1}"
    return f"t{image.timepoint + 1} · {text}" if timepoints > 1 else text


def _thumbnail(img: Image.Image, size: int) -> Image.Image:
    small = img.copy()
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    return small


def _series_title(number: int, images: list[InputImage], frames: int) -> str:
    description = str(images[0].dataset.get("SeriesDescription", "") or "").strip()
    return f"series {number}" + (f" · {description}" if description else "") + f" · {frames} frame(s)"
