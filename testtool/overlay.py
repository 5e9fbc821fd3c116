"""Blends masks into an image at the image's own resolution: one mask value = one image pixel, as in the viewer.

Why pure numpy: every rule (probability threshold, palette interpolation, label colours, orientation) is
checked pixel by pixel in tests on tiny images, with no server and no files. A mask whose shape is not
the image's is refused, so a transposed mask can never look right here.
"""

from __future__ import annotations

import numpy as np

from arterys_http.label_colours import DISTINCT_COLOURS

Color = tuple[int, int, int]
MASK_ALPHA = 0.5
# The colour of each label comes from arterys_http.label_colours (the same in every series and file, and
# in the worker's DICOM Segmentations); this name stays for the DICOM outputs' segment colours.
DISTINCT_COLORS: list[Color] = list(DISTINCT_COLOURS)
DEFAULT_PALETTE = {
    "type": "anchorpoints",
    "data": [
        {"threshold": 0.0, "color": [0, 0, 255, 0]},
        {"threshold": 0.5, "color": [0, 255, 0, 128]},
        {"threshold": 1.0, "color": [255, 0, 0, 200]},
    ],
}


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, 3) copy of a grayscale or colour display image."""
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


def outline_of(chosen: np.ndarray) -> np.ndarray:
    """The pixels of `chosen` that touch a pixel outside it (4-neighbours; the image's edge counts as
    outside): a one-pixel contour, so that the tissue under a mask stays visible."""
    padded = np.pad(chosen, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return chosen & ~inner


def _paint(rgb: np.ndarray, chosen: np.ndarray, color, alpha: float, outline: bool) -> None:
    """Blends `color` into the chosen pixels, or draws their outline in the full colour."""
    if outline:
        rgb[outline_of(chosen)] = np.asarray(color, dtype=np.uint8)
    else:
        rgb[chosen] = _blend(rgb[chosen], color, alpha)


def overlay_probability(rgb, mask_u8, threshold: float = 0.5, color: Color = (255, 0, 0), alpha: float = 0.5,
                        outline: bool = False):
    """Pixels whose probability (mask / 255) reaches `threshold` get `color` blended in (or outlined)."""
    rgb, mask = as_rgb(rgb), np.asarray(mask_u8)
    _check_shape(rgb, mask)
    _paint(rgb, mask.astype(np.float64) / 255.0 >= threshold, color, alpha, outline)
    return rgb


def overlay_boolean(rgb, mask, color: Color = (0, 220, 0), alpha: float = 0.5, outline: bool = False):
    """Every non-zero mask pixel gets `color` blended in (or outlined)."""
    rgb, mask = as_rgb(rgb), np.asarray(mask)
    _check_shape(rgb, mask)
    _paint(rgb, mask != 0, color, alpha, outline)
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
    rgb, mask = as_rgb(rgb), np.asarray(mask_u8, dtype=np.uint8)
    _check_shape(rgb, mask)
    rgba = palette_lookup(palette_json or DEFAULT_PALETTE)[mask]
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    return _blend(rgb, rgba[..., :3], alpha)


def overlay_labels(rgb, mask_u8, colors: dict[int, Color], alpha: float = 0.5, outline: bool = False):
    """Each class value gets its colour blended in (or outlined); 0 and values without a colour stay untouched."""
    rgb, mask = as_rgb(rgb), np.asarray(mask_u8)
    _check_shape(rgb, mask)
    for value, color in colors.items():
        chosen = mask == value
        if chosen.any():
            _paint(rgb, chosen, color, alpha, outline)
    return rgb


def class_number(key) -> float:
    """Sort key of a label_map key: its number, non-numbers last."""
    return int(key) if str(key).isdigit() else float("inf")
