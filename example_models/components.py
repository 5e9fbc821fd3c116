"""3D connected components with numpy alone, one slice at a time, in place on a label volume.

A component is a set of voxels of one value joined through faces (6-connectivity). Each slice is cut
into runs (a row's stretch of equal voxels); runs that touch (overlapping columns in the next row, or the
same row of the next slice) are joined with union-finds: within a slice over its runs, across slices over
the slices' 2D components. Memory is the volume itself, one slice of temporaries and a few integers per 2D
component, so it stays near the size of the mask whatever the study size.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np


@dataclass
class Component:
    voxels: int
    slice_index: int  # the slice where its cross-section is largest (the first of equals)
    box: tuple[int, int, int, int]  # (first column, first row, end column, end row) on that slice, ends exclusive


def _runs(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, end, first run of each row + total) of a 2D boolean plane's runs, row-major."""
    height, width = plane.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = plane
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    ends = np.nonzero(steps == -1)[1]
    return rows, starts, ends, np.searchsorted(rows, np.arange(height + 1))


class _UnionFind:
    def __init__(self, count: int = 0) -> None:
        self.parent = array("q", range(count))

    def add(self, count: int) -> int:
        first = len(self.parent)
        self.parent.extend(range(first, first + count))
        return first

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving keeps the trees flat
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the smallest id is the root: labels come out in order


def _join(uf: _UnionFind, a: tuple[list, list, list], b: tuple[list, list, list]) -> None:
    """Joins the ids of every run of `a` with those of the runs of `b` it overlaps (each sorted by start)."""
    (a_starts, a_ends, a_ids), (b_starts, b_ends, b_ids) = a, b
    i = j = 0
    while i < len(a_starts) and j < len(b_starts):
        if a_starts[i] < b_ends[j] and b_starts[j] < a_ends[i]:
            uf.union(a_ids[i], b_ids[j])
        if a_ends[i] < b_ends[j]:
            i += 1
        else:
            j += 1


@dataclass
class _Slice:
    """One slice's runs and the 2D component (0..count-1, in order of first run) each belongs to."""

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    bounds: list[int]
    component: np.ndarray
    count: int

    @classmethod
    def of(cls, plane: np.ndarray) -> _Slice:
        rows, starts, ends, bounds = _runs(plane)
        uf = _UnionFind(len(rows))
        lists = (starts.tolist(), ends.tolist(), list(range(len(rows))))
        bounds = bounds.tolist()
        for row in range(1, plane.shape[0]):
            _join(uf, _row(lists, bounds, row), _row(lists, bounds, row - 1))
        roots = np.fromiter((uf.find(i) for i in range(len(rows))), dtype=np.int64, count=len(rows))
        labels, component = np.unique(roots, return_inverse=True)
        return cls(rows, starts, ends, bounds, component.reshape(-1), len(labels))

    def row(self, ids: list, row: int) -> tuple[list, list, list]:
        lo, hi = self.bounds[row], self.bounds[row + 1]
        return self.starts[lo:hi].tolist(), self.ends[lo:hi].tolist(), ids[lo:hi]


def _row(lists: tuple[list, list, list], bounds: list, row: int) -> tuple[list, list, list]:
    lo, hi = bounds[row], bounds[row + 1]
    return lists[0][lo:hi], lists[1][lo:hi], lists[2][lo:hi]


def keep_components(volume: np.ndarray, value: int, min_voxels: int, drop_border: bool) -> list[Component]:
    """Finds the components of `volume == value` (volume: depth x height x width), sets to 0 those smaller
    than `min_voxels` or, with `drop_border`, touching the edge of any slice, and returns the others.

    Two passes over the slices: the first joins each slice's 2D components with the previous slice's
    (a union-find over 2D components, not voxels nor runs, so it stays small); the second labels each
    slice again the same way, drops what is not kept and measures what is.
    """
    depth, height, width = volume.shape
    uf = _UnionFind()
    sizes, border = array("q"), bytearray()
    firsts: list[int] = []
    previous: tuple[_Slice, list] | None = None
    for z in range(depth):
        plane = _Slice.of(volume[z] == value)
        first = uf.add(plane.count)
        firsts.append(first)
        lengths = plane.ends - plane.starts
        sizes.extend(np.bincount(plane.component, weights=lengths, minlength=plane.count).astype(np.int64).tolist())
        edge = (plane.starts == 0) | (plane.ends == width) | (plane.rows == 0) | (plane.rows == height - 1)
        border.extend((np.bincount(plane.component, weights=edge, minlength=plane.count) > 0).tolist())
        ids = (plane.component + first).tolist()
        if previous is not None:
            for row in range(height):
                _join(uf, plane.row(ids, row), previous[0].row(previous[1], row))
        previous = (plane, ids)

    count = len(uf.parent)
    if count == 0:
        return []
    roots = np.fromiter((uf.find(i) for i in range(count)), dtype=np.int64, count=count)
    voxels = np.bincount(roots, weights=np.frombuffer(sizes, dtype=np.int64), minlength=count).astype(np.int64)
    touches = np.bincount(roots, weights=np.frombuffer(bytes(border), dtype=np.uint8), minlength=count) > 0
    keep = voxels >= min_voxels
    if drop_border:
        keep &= ~touches

    best: dict[int, tuple[int, int, tuple[int, int, int, int]]] = {}  # root -> (area, slice, box)
    for z in range(depth):
        plane_values = volume[z]
        plane = _Slice.of(plane_values == value)  # the same labelling as in the first pass
        run_roots = roots[firsts[z] + plane.component]
        kept = keep[run_roots]
        if not kept.all():
            # the plane's voxels of `value`, row-major, are the runs one after another
            dropped = np.repeat(~kept, plane.ends - plane.starts)
            where = np.flatnonzero(plane_values == value)[dropped]
            plane_values[np.unravel_index(where, plane_values.shape)] = 0
        areas: dict[int, list[int]] = {}
        for root, row, start, end in zip(run_roots[kept].tolist(), plane.rows[kept].tolist(),
                                         plane.starts[kept].tolist(), plane.ends[kept].tolist(), strict=True):
            entry = areas.get(root)
            if entry is None:
                areas[root] = [end - start, start, row, end, row + 1]
            else:
                entry[0] += end - start
                entry[1], entry[2] = min(entry[1], start), min(entry[2], row)
                entry[3], entry[4] = max(entry[3], end), max(entry[4], row + 1)
        for root, (area, *box) in areas.items():
            if root not in best or area > best[root][0]:
                best[root] = (area, z, tuple(box))
    return [Component(int(voxels[root]), z, box) for root, (_, z, box) in sorted(best.items())]
