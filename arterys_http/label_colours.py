"""One display colour per finding label, the same wherever the label is drawn or stored.

The test tool draws a label's masks in this colour in every series and file of an answer, and the worker
writes the same colour into a DICOM Segmentation as the segment's recommended display colour, so that a
viewer and the test tool's pictures agree. The colour depends only on the set of labels being shown
(their names, in sorted order), never on the order of parts or series.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable

RGB = tuple[int, int, int]

# Twenty colours chosen to be told apart (Sasha Trubetskoy's list); more labels get generated hues.
DISTINCT_COLOURS: tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)


def _label_key(label: str) -> tuple[str, str]:
    return label.casefold(), label


def label_colours(labels: Iterable[str]) -> dict[str, RGB]:
    """A distinct colour for each distinct label: the first twenty from DISTINCT_COLOURS by sorted name, then
    golden-angle hues (never a repeat). The same set of labels always gets the same colours."""
    names = sorted(set(labels), key=_label_key)
    colours: dict[str, RGB] = {}
    used: set[RGB] = set()
    hue, step = 0.0, 0
    for rank, name in enumerate(names):
        if rank < len(DISTINCT_COLOURS):
            colour = DISTINCT_COLOURS[rank]
        else:
            while True:
                hue = (hue + 0.618033988749895) % 1.0
                step += 1
                saturation, value = (0.95, 0.6, 0.8)[step % 3], (1.0, 0.75, 0.9)[step // 3 % 3]
                r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
                colour = (round(r * 255), round(g * 255), round(b * 255))
                if colour not in used:
                    break
        used.add(colour)
        colours[name] = colour
    return colours


def mask_labels(result_json) -> list[str]:
    """The labels an answer's masks draw, whose colours `label_colours` gives: each mask part's label, the
    names of a numeric label mask's label_map instead of its label. The worker colours its DICOM
    Segmentations with label_colours(mask_labels(answer)), so a tool that colours the same set agrees."""
    parts = result_json.get("parts") if isinstance(result_json, dict) else result_json
    labels: list[str] = []
    for part in parts or []:
        if not isinstance(part, dict) or "binary_data_shape" not in part:
            continue
        if part.get("binary_type") == "numeric_label_mask" and isinstance(part.get("label_map"), dict):
            labels.extend(str(name) for name in part["label_map"].values())
        else:
            labels.append(str(part.get("label", "")))
    return labels
