"""The pictures the mock model draws: pure numpy, so tests can recompute them independently.

Every shape is off-centre (centre at 40 % of the width, 60 % of the height) and grows with the slice
index, so a mask written with its axes swapped or flipped looks different from the right one.
"""

from __future__ import annotations

import numpy as np


def ellipse_distance(height: int, width: int, index: int, count: int) -> np.ndarray:
    """Normalised squared distance from an off-centre ellipse's centre (<= 1 inside), shape (height, width)."""
    grow = 0.15 + 0.25 * (index + 1) / max(count, 1)
    cy, cx = height * 0.6, width * 0.4
    ry, rx = max(height * grow, 1.0), max(width * grow, 1.0)
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2


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
    """Stacks slices into (timepoints, depth, height, width); time point t shifts the growth by t."""
    return np.stack([
        np.stack([slice_fn(height, width, z + t, depth + timepoints - 1) for z in range(depth)])
        for t in range(timepoints)
    ])


def box_corners(height: int, width: int) -> tuple[list[int], list[int]]:
    """Bounding box ([col, row] top-left, [col, row] bottom-right) of the middle slice's ellipse core."""
    return [width // 5, height // 3], [(width * 3) // 5, (height * 9) // 10 - 1]
