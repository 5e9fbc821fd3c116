"""The pictures the mock model draws: pure numpy, so tests can recompute them independently.

Every shape is off-centre (centre at 40 % of the width, 60 % of the height) and grows with the slice
index, so a mask written with its axes swapped or flipped looks different from the right one.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _centre_offsets(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres relative to the ellipse's centre: a column and a row, broadcast against each other."""
    rows = (np.arange(height, dtype=np.float64) + 0.5 - height * 0.6)[:, None]
    columns = (np.arange(width, dtype=np.float64) + 0.5 - width * 0.4)[None, :]
    return rows, columns


def ellipse_distance(height: int, width: int, index: int, count: int) -> np.ndarray:
    """Normalised squared distance from an off-centre ellipse's centre (<= 1 inside), shape (height, width)."""
    grow = 0.15 + 0.25 * (index + 1) / max(count, 1)
    ry, rx = max(height * grow, 1.0), max(width * grow, 1.0)
    rows, columns = _centre_offsets(height, width)
    return (rows / ry) ** 2 + (columns / rx) ** 2


def probability_slice(height: int, width: int, index: int, count: int) -> np.ndarray:
    """uint8 probabilities: 255 at the centre falling to 0 at the ellipse's edge."""
    distance = ellipse_distance(height, width, index, count)
    return np.clip(np.round((1.0 - distance) * 255.0), 0, 255).astype(np.uint8)


def boolean_slice(height: int, width: int, index: int, count: int) -> np.ndarray:
    return (ellipse_distance(height, width, index, count) <= 1.0).astype(np.uint8)


def label_slice(height: int, width: int, index: int, count: int) -> np.ndarray:
    """1 = core (distance <= 0.4), 2 = rim (0.4 < distance <= 1), 0 = background."""
    distance = ellipse_distance(height, width, index, count)
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[distance <= 1.0] = 2
    labels[distance <= 0.4] = 1
    return labels


def volume(slice_fn, timepoints: int, depth: int, height: int, width: int) -> np.ndarray:
    """Slices filled into one (timepoints, depth, height, width) array, allocated once (a 512-slice mask is
    about 128 MiB: stacking lists of slices held it three times); time point t shifts the growth by t."""
    out = np.empty((timepoints, depth, height, width), dtype=np.uint8)
    for t in range(timepoints):
        for z in range(depth):
            out[t, z] = slice_fn(height, width, z + t, depth + timepoints - 1)
    return out


def box_corners(height: int, width: int) -> tuple[list[int], list[int]]:
    """Bounding box ([col, row] top-left, [col, row] bottom-right) of the middle slice's ellipse core."""
    return [width // 5, height // 3], [(width * 3) // 5, (height * 9) // 10 - 1]
