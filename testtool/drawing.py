"""Vector drawing on an enlarged picture (PIL): boxes, measurement lines, text, and the legend panel.

Why drawn after enlarging: lines one screen pixel wide and legible text on a 32x48 image. Why a panel
below the image for the legend and the classification text: drawn over the image they covered anatomy,
which is what a model author is looking at.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]
BOX_COLOR: Color = (255, 255, 0)
LINE_COLOR: Color = (0, 255, 255)
TEXT_COLOR: Color = (255, 255, 255)
PANEL_COLOR: Color = (24, 24, 24)
PANEL_MIN_WIDTH = 256  # a narrow image still gets a panel wide enough to read
PANEL_MAX_LINES = 60  # classification JSON can be long; the HTML report shows all of it


@lru_cache(maxsize=4)
def font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy, text: str, fill=TEXT_COLOR) -> None:
    """Text with a black outline: readable on any background."""
    draw.text(xy, text, fill=fill, font=font(), stroke_width=1, stroke_fill=(0, 0, 0))


def text_size(text: str) -> tuple[int, int]:
    left, top, right, bottom = font().getbbox(text or " ", stroke_width=1)
    return int(right - left), int(bottom - min(top, 0))


def fit(text: str, width: int) -> str:
    """Shortens `text` with an ellipsis until it fits `width` pixels."""
    text = text if len(text) <= 400 else text[:400]  # no canvas shows more; keeps the loop short
    if text_size(text)[0] <= width:
        return text
    while text and text_size(text + "…")[0] > width:
        text = text[:-1]
    return text + "…"


def line_height() -> int:
    return text_size("Hg")[1] + 4


def draw_text(img: Image.Image, xy, text: str, fill: Color = TEXT_COLOR) -> None:
    """One outlined line at `xy`, cut with an ellipsis at the image's right edge."""
    _text(ImageDraw.Draw(img), xy, fit(text, max(img.width - int(xy[0]) - 2, 8)), fill=tuple(fill))


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
        text = fit(label, max(img.width - max(x0, 0) - 2, 20))
        height = text_size(text)[1]
        y = y0 - height - 3 if y0 - height - 3 >= 0 else y1 + 3
        _text(draw, (max(x0, 0), min(max(y, 0), img.height - height - 1)), text, fill=tuple(color))
    return img


def canvas_point(point, scale: int) -> tuple[float, float]:
    """Pixel coordinate -> enlarged canvas, integer coordinates landing on the centre of their block."""
    return float(point[0]) * scale + (scale - 1) / 2, float(point[1]) * scale + (scale - 1) / 2


def draw_measurement(img: Image.Image, start, end, label: str = "", length_text: str = "",
                     color: Color = LINE_COLOR, scale: int = 1) -> Image.Image:
    """A line from start to end ([x = col, y = row] pixel space) with end marks and its length as text."""
    draw = ImageDraw.Draw(img)
    p0, p1 = canvas_point(start, scale), canvas_point(end, scale)
    draw.line([p0, p1], fill=tuple(color), width=1 if scale < 4 else 2)
    if scale >= 4:
        for x, y in (p0, p1):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=tuple(color))
    text = ": ".join(t for t in (label, length_text) if t)
    if text:
        text = fit(text, img.width - 4)
        w, h = text_size(text)
        x = min(max(p1[0] + 4, 0), img.width - w - 2)
        y = min(max(p1[1] - h - 4, 0), img.height - h - 2)
        _text(draw, (x, y), text, fill=tuple(color))
    return img


def draw_text_lines(img: Image.Image, lines, origin=(4, 4)) -> Image.Image:
    """Lines from `origin` down; what does not fit the image ends with an ellipsis."""
    draw = ImageDraw.Draw(img)
    x, y = origin
    height = text_size("Hg")[1] + 3
    lines = list(lines)
    for index, line in enumerate(lines):
        if y + 2 * height > img.height and index < len(lines) - 1:
            _text(draw, (x, y), "…")
            break
        _text(draw, (x, y), fit(str(line), img.width - x - 2))
        y += height
    return img


def draw_legend_entries(img: Image.Image, entries: Sequence[tuple[str, Color]], top: int) -> int:
    """Colour swatch + name per entry, from `top` down; returns the y below the last entry."""
    draw = ImageDraw.Draw(img)
    step = line_height()
    size = step - 4
    y = top
    for name, color in entries:
        draw.rectangle([4, y + 2, 4 + size, y + 2 + size], fill=tuple(color), outline=(0, 0, 0))
        _text(draw, (8 + size, y), fit(str(name), img.width - size - 12))
        y += step
    return y


def add_panel(img: Image.Image, legend: Sequence[tuple[str, Color]], lines: Sequence[str]) -> Image.Image:
    """`img` with a panel below it holding the legend, then the text lines; `img` itself when both are empty.

    The image keeps its pixel coordinates (top-left), so drawings on it stay where they were.
    """
    legend = list(dict.fromkeys((str(name), tuple(color)) for name, color in legend))  # once each, in order
    lines = [str(line) for line in lines]
    if len(lines) > PANEL_MAX_LINES:
        lines = [*lines[:PANEL_MAX_LINES - 1], f"… {len(lines) - PANEL_MAX_LINES + 1} more line(s)"]
    if not legend and not lines:
        return img
    step = line_height()
    height = 8 + step * (len(legend) + len(lines))
    canvas = Image.new("RGB", (max(img.width, PANEL_MIN_WIDTH), img.height + height), PANEL_COLOR)
    canvas.paste(img.convert("RGB"), (0, 0))
    y = draw_legend_entries(canvas, legend, img.height + 4)
    for line in lines:
        draw_text(canvas, (4, y), line)
        y += step
    return canvas


def legend_for_labels(label_map: dict[str, str], colors: dict[int, Color]) -> list[tuple[str, Color]]:
    """(name, colour) per class of a numeric label mask, in class order."""
    keys = sorted((k for k in label_map if str(k).isdigit() and int(k) in colors), key=int)
    return [(str(label_map[k]), colors[int(k)]) for k in keys]


def draw_legend(img: Image.Image, label_map: dict[str, str], colors: dict[int, Color]) -> Image.Image:
    """`img` with the legend of a numeric label mask (class colour and name) in a panel below it."""
    return add_panel(img, legend_for_labels(label_map, colors), [])
