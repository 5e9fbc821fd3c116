"""example_models.components against a plain flood fill, on volumes whose components are known or random."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from example_models.components import keep_components


def flood_fill_components(volume: np.ndarray, value: int) -> list[set[tuple[int, int, int]]]:
    """The reference: breadth-first search through the six face neighbours, one voxel at a time."""
    seen = np.zeros(volume.shape, dtype=bool)
    found = []
    for start in zip(*np.nonzero(volume == value), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        component, queue = set(), deque([start])
        while queue:
            voxel = queue.popleft()
            component.add(tuple(int(v) for v in voxel))
            for axis in range(3):
                for step in (-1, 1):
                    near = list(voxel)
                    near[axis] += step
                    near = tuple(near)
                    if 0 <= near[axis] < volume.shape[axis] and not seen[near] and volume[near] == value:
                        seen[near] = True
                        queue.append(near)
        found.append(component)
    return found


def touches_border(component, shape) -> bool:
    return any(r in (0, shape[1] - 1) or c in (0, shape[2] - 1) for _, r, c in component)


def test_known_components_are_found_kept_and_dropped():
    volume = np.zeros((4, 10, 12), dtype=np.uint8)
    volume[0:3, 2:5, 3:7] = 1  # 36 voxels
    volume[1, 7, 8] = 1  # a single voxel: below min_voxels
    volume[2:4, 6:9, 0:2] = 1  # 12 voxels touching the left edge
    volume[3, 5:7, 7:9] = 1  # meets the first block only at a corner: a component of its own (4 voxels)
    volume[0, 0:2, 10:12] = 2  # another value: untouched
    kept = keep_components(volume, 1, min_voxels=4, drop_border=True)
    assert [(c.voxels, c.slice_index, c.box) for c in kept] == [(36, 0, (3, 2, 7, 5)), (4, 3, (7, 5, 9, 7))]
    assert np.count_nonzero(volume == 1) == 40 and volume[1, 7, 8] == 0 and not volume[2:4, 6:9, 0:2].any()
    assert np.count_nonzero(volume == 2) == 4


def test_nothing_of_the_value_gives_nothing():
    volume = np.zeros((2, 3, 3), dtype=np.uint8)
    assert keep_components(volume, 1, min_voxels=1, drop_border=False) == []


@pytest.mark.parametrize("seed", range(6))
def test_random_volumes_match_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    volume = rng.choice(np.array([0, 1, 2], dtype=np.uint8), size=(5, 14, 17), p=[0.45, 0.4, 0.15])
    original = volume.copy()
    expected = flood_fill_components(original, 1)
    kept = keep_components(volume, 1, min_voxels=3, drop_border=seed % 2 == 0)
    wanted = [c for c in expected if len(c) >= 3 and not (seed % 2 == 0 and touches_border(c, volume.shape))]
    assert sorted(c.voxels for c in kept) == sorted(len(c) for c in wanted)
    survivors = set().union(*wanted) if wanted else set()
    assert {tuple(int(v) for v in x) for x in zip(*np.nonzero(volume == 1), strict=True)} == survivors
    assert np.array_equal(volume == 2, original == 2)
    for component in wanted:  # each box is the component's extent on its largest slice
        by_slice = {}
        for z, r, c in component:
            by_slice.setdefault(z, []).append((r, c))
        area = max(len(v) for v in by_slice.values())
        z = min(k for k, v in by_slice.items() if len(v) == area)
        rows, cols = zip(*by_slice[z], strict=True)
        box = (min(cols), min(rows), max(cols) + 1, max(rows) + 1)
        assert any(k.slice_index == z and k.box == box and k.voxels == len(component) for k in kept)
