"""A contact sheet: every frame of a series as a small tile in one picture, with a title and a legend.

Why: a mask that lands on the wrong slices, or a finding on one slice of three hundred, is seen at a
glance on a sheet, never by paging through PNGs. Tiles with something drawn on them get a coloured
frame. Pure PIL: the caller hands over the tiles and saves the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from testtool.drawing import PANEL_COLOR, draw_legend_entries, draw_text, fit, line_height, text_size

Color = tuple[int, int, int]
SHEET_WIDTH = 1280  # tiles per row follow from this
GAP = 6
MARKED: Color = (255, 200, 0)  # frame of a tile with findings
PLAIN: Color = (70, 70, 70)


@dataclass
class Tile:
    image: Image.Image  # the frame with its findings, already small
    caption: str
    marked: bool = False  # something is drawn on it


def tile_size(count: int) -> int:
    """Longest side of a tile: large for a few frames, small for hundreds, so a sheet stays readable."""
    return 192 if count <= 16 else 144 if count <= 64 else 96


def contact_sheet(tiles: Sequence[Tile], title: Sequence[str], legend: Sequence[tuple[str, Color]]) -> Image.Image:
    """Title lines, then the tiles row by row (captions below them), then the legend."""
    step = line_height()
    cell_w = max(tile.image.width for tile in tiles) + 2 * GAP
    cell_h = max(tile.image.height for tile in tiles) + 2 * GAP + step
    columns = max(1, min(len(tiles), SHEET_WIDTH // cell_w))
    rows = math.ceil(len(tiles) / columns)
    header = GAP + step * len(title)
    width = max(columns * cell_w + GAP, *(text_size(line)[0] + 2 * GAP for line in title), 320)  # whole UIDs
    height = header + rows * cell_h + GAP + step * len(legend) + GAP
    sheet = Image.new("RGB", (width, height), PANEL_COLOR)
    draw = ImageDraw.Draw(sheet)
    for number, line in enumerate(title):
        draw_text(sheet, (GAP, GAP + number * step), line)
    for index, tile in enumerate(tiles):
        x = GAP + (index % columns) * cell_w
        y = header + (index // columns) * cell_h
        left, top = x + GAP, y + GAP
        draw.rectangle([left - 2, top - 2, left + tile.image.width + 1, top + tile.image.height + 1],
                       outline=MARKED if tile.marked else PLAIN, width=2)
        sheet.paste(tile.image.convert("RGB"), (left, top))
        draw_text(sheet, (left, top + tile.image.height + 3), fit(tile.caption, cell_w - 2 * GAP), (220, 220, 220))
    draw_legend_entries(sheet, legend, header + rows * cell_h + GAP)
    return sheet
