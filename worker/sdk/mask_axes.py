"""Names a mask's axes in a model author's terms, for the messages about a mask of the wrong shape.

The protocol says "width x height is 4 x 24 but the series' images are 24 x 40": exact, but the author
built an array, and what they need is "your array is (rows, cols, depth); it must be (depth, rows, cols):
np.moveaxis(mask, -1, 0)". `explain` finds the order of the expected axes that the array's shape has
(when its sizes are a permutation of them) and the numpy call that reorders it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import permutations

from arterys_http.protocol import StudyIndex


def axes_in(shape: Sequence[int], expected: Mapping[str, int]) -> tuple[str, ...] | None:
    """The expected axes' names in the order `shape` has them, or None when its sizes are not theirs.
    Sizes that repeat (rows = cols) prefer the expected order for those axes."""
    names = list(expected)
    if len(shape) != len(names) or tuple(shape) == tuple(expected.values()):
        return None
    for order in permutations(range(len(names))):
        if all(shape[i] == expected[names[order[i]]] for i in range(len(names))):
            return tuple(names[j] for j in order)
    return None


def fix_call(found: Sequence[str], wanted: Sequence[str], name: str = "mask") -> str:
    """The numpy call that turns an array with axes `found` into one with axes `wanted`."""
    source = [list(found).index(axis) for axis in wanted]
    n = len(wanted)
    if n == 2:
        return f"{name}.T"
    if source == [n - 1, *range(n - 1)]:
        return f"np.moveaxis({name}, -1, 0)"
    if source == [*range(1, n), 0]:
        return f"np.moveaxis({name}, 0, -1)"
    return f"{name}.transpose({', '.join(map(str, source))})"


def explain(shape: Sequence[int], expected: Mapping[str, int]) -> str:
    """'' when `shape` is not a reordering of `expected`; else 'it looks like (a, b, c): CALL makes it (...)'."""
    found = axes_in(shape, expected)
    if found is None:
        return ""
    wanted = tuple(expected)
    return f"it looks like ({', '.join(found)}): {fix_call(found, wanted)} makes it ({', '.join(wanted)})"


def shape_hints(result_json: Mapping, study: StudyIndex | None) -> list[str]:
    """One sentence per mask whose shape does not fit its series or image, in the array's terms."""
    parts = result_json.get("parts")
    if study is None or not isinstance(parts, list):
        return []
    hints = []
    for index, part in enumerate(parts):
        shape = part.get("binary_data_shape") if isinstance(part, Mapping) else None
        if not isinstance(shape, Mapping) or not all(isinstance(v, int) for v in shape.values()):
            continue
        hint = _hint(f"parts[{index}]", part, shape, study)
        if hint:
            hints.append(hint)
    return hints


def _hint(where: str, part: Mapping, shape: Mapping, study: StudyIndex) -> str:
    if "depth" in shape or "timepoints" in shape:
        images = study.series(str(part.get("SeriesInstanceUID") or ""))
        if not images or not {"depth", "height", "width"} <= set(shape):
            return ""
        timepoints = shape.get("timepoints", 1)
        frames = sum(image.frames for image in images)
        if frames % timepoints:
            return ""
        expected = {"depth": frames // timepoints, "rows": images[0].rows, "cols": images[0].columns}
        actual = (shape["depth"], shape["height"], shape["width"])
        whose = "the series it names"  # never the UID: these hints reach the worker's log
        call = "series.mask_shape() gives (timepoints, depth, rows, cols)"
    else:
        image = part.get("dicom_image")
        info = study.images.get(str(image.get("SOPInstanceUID"))) if isinstance(image, Mapping) else None
        if info is None or not {"height", "width"} <= set(shape):
            return ""
        expected = {"rows": info.rows, "cols": info.columns}
        actual = (shape["height"], shape["width"])
        whose = "the image it names"
        call = "instance.rows, instance.columns"
    if actual == tuple(expected.values()):
        return ""
    axes = ", ".join(expected)
    sizes = ", ".join(map(str, expected.values()))
    how = explain(actual, expected)
    return (f"{where}: the mask array is {tuple(actual)} but {whose} needs ({axes}) = ({sizes}) ({call})"
            + (f"; {how}" if how else ""))
