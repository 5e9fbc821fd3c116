"""The Arterys result protocol as rules: what a result JSON plus its binaries must satisfy.

One checker serves everybody who needs to know whether an answer is valid: the worker before it sends
anything, the bridge before it answers 200, the test tool when it reports to a model author. It works
on the JSON form (dicts and lists) because that is what the viewer receives, and it returns every
violation as a plain sentence rather than stopping at the first, so that an author fixes all at once.

Pure standard library: the bridge imports it and must stay free of numpy and pydicom.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

PROTOCOL_VERSION = "1.0"

MASK_TYPES = ("probability_mask", "boolean_mask", "heatmap", "numeric_label_mask")
DICOM_TYPES = ("dicom_secondary_capture", "dicom", "dicom_structured_report", "dicom_gsps")
BINARY_TYPES = MASK_TYPES + DICOM_TYPES
COORDINATE_TYPES = ("pixel", "world")

SHAPE_3D = ("timepoints", "depth", "width", "height")
SHAPE_2D = ("width", "height")
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"

# \Z, not $: '$' also matches before a final newline, which would let "1\n" or "<hash>\n" pass.
_DIGITS = re.compile(r"^[0-9]+\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class ImageInfo:
    """What the checker needs to know about one input instance."""

    sop_instance_uid: str
    series_instance_uid: str
    rows: int
    columns: int
    frames: int = 1


@dataclass
class StudyIndex:
    """The input study, for checks that compare the answer with what was sent."""

    images: dict[str, ImageInfo] = field(default_factory=dict)

    @classmethod
    def of(cls, images: Iterable[ImageInfo]) -> StudyIndex:
        return cls({image.sop_instance_uid: image for image in images})

    def series(self, series_uid: str) -> list[ImageInfo]:
        return [i for i in self.images.values() if i.series_instance_uid == series_uid]


def is_dicom_file(head: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then 'DICM'."""
    return head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC


def mask_length(shape: Mapping) -> int:
    """Bytes a mask of this binary_data_shape must have (one uint8 per voxel)."""
    length = 1
    for key in SHAPE_3D if "depth" in shape or "timepoints" in shape else SHAPE_2D:
        length *= int(shape.get(key, 0))
    return length


def sha256_hex(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def hashes_line(input_hash: str, output_hash: str) -> str:
    """The last response part: `<input_hash>:<output_hash>`."""
    return f"{input_hash}:{output_hash}"


def check_hashes_line(text: str) -> list[str]:
    problems = []
    left, sep, right = text.partition(":")
    if not sep or not _HEX64.match(left) or not _HEX64.match(right):
        problems.append(
            f"hashes part must be '<64 hex>:<64 hex>' (129 characters), got {len(text)} characters: {text[:80]!r}"
        )
    return problems


# ---------------------------------------------------------------------------------------------------


class _Report:
    """Collects violations with the JSON path they concern."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_point(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)


def check_result(
    result,
    binaries: Sequence[int | bytes | bytearray | memoryview],
    study: StudyIndex | None = None,
) -> list[str]:
    """Every way `result` (the result JSON) and `binaries` break docs/protocol.md, as sentences.

    `binaries` holds, per binary part, either its bytes (full checks: label values, DICOM magic) or only
    its length (what a streaming receiver knows before the bytes arrive). With `study`, references to
    input images and mask sizes are compared with the input.
    """
    report = _Report()
    if not isinstance(result, Mapping):
        report.add("", f"the result must be a JSON object, got {type(result).__name__}")
        return report.problems

    version = result.get("protocol_version")
    if version != PROTOCOL_VERSION:
        report.add("protocol_version", f"must be \"{PROTOCOL_VERSION}\", got {version!r}")

    parts = result.get("parts")
    palettes = result.get("palettes")
    _check_palettes(report, palettes)
    if not isinstance(parts, list):
        report.add("parts", f"must be a list (use [] when there is no binary), got {type(parts).__name__}")
        parts = []
    if len(parts) != len(binaries):
        report.add(
            "parts",
            f"{len(parts)} entries declared but {len(binaries)} binaries returned: there must be exactly one "
            "binary per entry of parts, in the same order (a missing one shifts every later mask)",
        )
    for index, part in enumerate(parts):
        binary = binaries[index] if index < len(binaries) else None
        _check_part(report, f"parts[{index}]", part, binary, palettes, study)

    _check_boxes(report, result.get("bounding_boxes_2d"), study)
    _check_measurements(report, result.get("linear_measurements_2d"), study)
    series_json = result.get("series_ml_json")
    if series_json is not None:
        if not isinstance(series_json, Mapping):
            report.add("series_ml_json", "must be an object keyed by SeriesInstanceUID")
        elif study is not None:
            known = {i.series_instance_uid for i in study.images.values()}
            for number, uid in enumerate(series_json, start=1):
                if uid not in known:  # the key is not quoted: UIDs identify a study, and problems reach logs
                    report.add(f"series_ml_json (key {number})", "names no series of the input study")
    return report.problems


def _check_part(report: _Report, path: str, part, binary, palettes, study: StudyIndex | None) -> None:
    if not isinstance(part, Mapping):
        report.add(path, f"must be an object, got {type(part).__name__}")
        return
    if not isinstance(part.get("label"), str):
        report.add(f"{path}.label", "must be a string")
    binary_type = part.get("binary_type")
    if binary_type not in BINARY_TYPES:
        report.add(f"{path}.binary_type", f"unknown value {binary_type!r}; known: {', '.join(BINARY_TYPES)}")
        return
    _check_conformance(report, f"{path}.dicomConformance", part.get("dicomConformance"))
    size = binary if binary is None or _is_int(binary) else len(binary)
    content = None if binary is None or _is_int(binary) else binary

    if binary_type in DICOM_TYPES:
        if "binary_data_shape" in part:
            report.add(f"{path}.binary_data_shape", f"a {binary_type} part is a DICOM file and has no shape")
        if content is not None and not is_dicom_file(bytes(content[:132])):
            report.add(path, f"a {binary_type} binary must be a DICOM Part 10 file ('DICM' at byte 128)")
        return

    expected = _check_mask_shape(report, path, part, study)
    if expected is not None and size is not None and size != expected:
        report.add(
            path,
            f"binary_data_shape {_describe_shape(part['binary_data_shape'])} needs {_digits(expected)} bytes "
            f"(one uint8 per voxel) but the binary has {size}; a numpy array of shape "
            "(timepoints, depth, height, width) in C order has the protocol's layout",
        )
    threshold = part.get("probability_threshold")
    if threshold is not None and not (_is_number(threshold) and 0 <= threshold <= 1):
        report.add(f"{path}.probability_threshold", f"must be a number in 0..1, got {threshold!r}")
    if binary_type == "heatmap" and "palette" in part:
        name = part["palette"]
        if not isinstance(name, str) or not isinstance(palettes, Mapping) or name not in palettes:
            report.add(f"{path}.palette", f"{name!r} names no entry of the top-level palettes object")
    if binary_type == "numeric_label_mask":
        _check_label_map(report, f"{path}.label_map", part.get("label_map"), content)


def _digits(number: int) -> str:
    """str(number), or a bound when Python refuses to write it out (more than 4300 digits by default):
    a product of shape values that json.loads accepted can be that long."""
    try:
        return str(number)
    except ValueError:
        return f"2**{number.bit_length() - 1} or more"


def _describe_shape(shape) -> str:
    return ", ".join(f"{k}={shape.get(k)}" for k in SHAPE_3D if k in shape)


def _check_mask_shape(report: _Report, path: str, part, study: StudyIndex | None) -> int | None:
    """Checks binary_data_shape and what it refers to; returns the expected byte length if known."""
    shape = part.get("binary_data_shape")
    if not isinstance(shape, Mapping):
        report.add(f"{path}.binary_data_shape", "a mask needs binary_data_shape")
        return None
    bad = [k for k, v in shape.items() if k in SHAPE_3D and not (_is_int(v) and v > 0)]
    for key in bad:
        report.add(f"{path}.binary_data_shape.{key}", f"must be a positive integer, got {shape[key]!r}")
    unknown = [k for k in shape if k not in SHAPE_3D]
    if unknown:
        report.add(f"{path}.binary_data_shape", f"unknown keys {unknown}; known: {', '.join(SHAPE_3D)}")
    is_3d = "depth" in shape or "timepoints" in shape
    needed = SHAPE_3D if is_3d else SHAPE_2D
    missing = [k for k in needed if k not in shape]
    if missing:
        kind = "a 3D mask" if is_3d else "a 2D mask"
        report.add(f"{path}.binary_data_shape", f"{kind} needs {', '.join(missing)}")
    if bad or missing:
        return None

    if is_3d:
        series_uid = part.get("SeriesInstanceUID")
        if not isinstance(series_uid, str) or not series_uid:
            report.add(f"{path}.SeriesInstanceUID", "a 3D mask must name the series it covers")
        elif study is not None:
            _check_volume_against_input(report, path, shape, study.series(series_uid))
    else:
        image = part.get("dicom_image")
        if not isinstance(image, Mapping) or not isinstance(image.get("SOPInstanceUID"), str):
            report.add(f"{path}.dicom_image", "a 2D mask needs dicom_image.SOPInstanceUID")
        else:
            frame = _check_frame_number(report, f"{path}.dicom_image.frame_number", image.get("frame_number"))
            if study is not None:
                info = _known_image(report, f"{path}.dicom_image", image["SOPInstanceUID"], frame, study)
                if info and (shape["width"], shape["height"]) != (info.columns, info.rows):
                    report.add(
                        f"{path}.binary_data_shape",
                        f"width x height is {shape['width']} x {shape['height']} but the image is "
                        f"{info.columns} x {info.rows} (columns x rows)",
                    )
    return mask_length(shape)


def _check_volume_against_input(report, path, shape, images: list[ImageInfo]) -> None:
    if not images:
        report.add(f"{path}.SeriesInstanceUID", "names no series of the input study")
        return
    columns, rows = images[0].columns, images[0].rows
    frames = sum(i.frames for i in images)
    if (shape["width"], shape["height"]) != (columns, rows):
        report.add(
            f"{path}.binary_data_shape",
            f"width x height is {shape['width']} x {shape['height']} but the series' images are "
            f"{columns} x {rows} (columns x rows)",
        )
    if shape["depth"] * shape["timepoints"] != frames:
        report.add(
            f"{path}.binary_data_shape",
            f"depth x timepoints is {shape['depth']} x {shape['timepoints']} but the series has {frames} images",
        )


def _check_frame_number(report: _Report, path: str, frame) -> int | None:
    if frame is None:
        return None
    if not (_is_int(frame) and frame >= 1):
        report.add(path, f"must be an integer >= 1 (frames count from 1), got {frame!r}")
        return None
    return frame


def _known_image(report, path, uid, frame, study: StudyIndex) -> ImageInfo | None:
    info = study.images.get(uid)
    if info is None:
        report.add(f"{path}.SOPInstanceUID" if path.endswith("dicom_image") else path,
                   "names no instance of the input study")
        return None
    if frame is not None and frame > info.frames:
        report.add(path, f"frame_number {frame} but the instance has {info.frames} frame(s)")
    return info


def _check_label_map(report: _Report, path: str, label_map, content) -> None:
    if not isinstance(label_map, Mapping) or not label_map:
        report.add(path, "a numeric_label_mask needs a label_map like {\"1\": \"liver\"}")
        return
    names = list(label_map.values())
    for key, name in label_map.items():
        if not isinstance(key, str) or not _DIGITS.match(key):
            report.add(path, f"key {key!r} must be a digit string such as \"1\"")
        if not isinstance(name, str) or not name:
            report.add(f"{path}[{key!r}]", "must be a non-empty name")
    duplicates = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if duplicates:
        report.add(path, f"label names must be unique; repeated: {duplicates}")
    if content is not None:
        # Mask values are bytes: a key of more than three digits (leading zeros aside) names none, and
        # int() refuses a string of more than 4300 digits, leading zeros included.
        values = (k.lstrip("0") or "0" for k in label_map if isinstance(k, str) and _DIGITS.match(k))
        keys = {int(v) for v in values if len(v) <= 3}
        missing = sorted(_values_outside(content, keys | {0}))
        if missing:
            report.add(path, f"mask values {missing} have no entry in label_map")


def _values_outside(content, allowed: set[int], chunk: int = 16 << 20) -> set[int]:
    """Byte values in `content` that are not in `allowed`, in C-speed passes (masks reach 500 MiB)."""
    delete = bytes(v for v in allowed if 0 <= v <= 255)
    view = memoryview(content).cast("B")
    found: set[int] = set()
    for start in range(0, len(view), chunk):
        found.update(bytes(view[start : start + chunk]).translate(None, delete))
    return found


def _check_palettes(report: _Report, palettes) -> None:
    if palettes is None:
        return
    if not isinstance(palettes, Mapping):
        report.add("palettes", "must be an object of named palettes")
        return
    for name, palette in palettes.items():
        path = f"palettes[{name!r}]"
        if not isinstance(palette, Mapping):
            report.add(path, "must be an object {type, data}")
            continue
        if palette.get("type") != "anchorpoints":
            report.add(f"{path}.type", f"must be \"anchorpoints\", got {palette.get('type')!r}")
        data = palette.get("data")
        if not isinstance(data, list) or len(data) < 2:
            report.add(f"{path}.data", "needs at least two anchor points")
            continue
        thresholds = []
        for index, point in enumerate(data):
            point_path = f"{path}.data[{index}]"
            if not isinstance(point, Mapping):
                report.add(point_path, "must be an object {threshold, color}")
                continue
            threshold = point.get("threshold")
            if not (_is_number(threshold) and 0 <= threshold <= 1):
                report.add(f"{point_path}.threshold", f"must be a number in 0..1, got {threshold!r}")
            else:
                thresholds.append(threshold)
            color = point.get("color")
            if not (isinstance(color, list) and len(color) == 4 and all(_is_int(c) and 0 <= c <= 255 for c in color)):
                report.add(f"{point_path}.color", f"must be four integers 0..255 [r, g, b, a], got {color!r}")
        if len(thresholds) == len(data):
            if thresholds[0] != 0 or thresholds[-1] != 1:
                report.add(f"{path}.data", "the first threshold must be 0.0 and the last 1.0")
            if any(b < a for a, b in itertools.pairwise(thresholds)):
                report.add(f"{path}.data", "thresholds must be in ascending order")


def _check_conformance(report: _Report, path: str, conformance) -> None:
    if conformance is None:
        return
    items = conformance.get("recommended") if isinstance(conformance, Mapping) else None
    if not isinstance(items, list):
        report.add(path, "must be {\"recommended\": [{\"description\": ..., \"compliant\": true|false}]}")
        return
    for index, item in enumerate(items):
        if not (isinstance(item, Mapping) and isinstance(item.get("description"), str)
                and isinstance(item.get("compliant"), bool)):
            report.add(f"{path}.recommended[{index}]", "needs a string description and a boolean compliant")


def _check_image_ref(report: _Report, path: str, item, study: StudyIndex | None):
    uid = item.get("SOPInstanceUID")
    if not isinstance(uid, str) or not uid:
        report.add(f"{path}.SOPInstanceUID", "must name the input instance")
        return None
    frame = _check_frame_number(report, f"{path}.frame_number", item.get("frame_number"))
    if study is None:
        return None
    return _known_image(report, f"{path}.SOPInstanceUID", uid, frame, study)


def _check_boxes(report: _Report, boxes, study: StudyIndex | None) -> None:
    if boxes is None:
        return
    if not isinstance(boxes, list):
        report.add("bounding_boxes_2d", "must be a list")
        return
    for index, box in enumerate(boxes):
        path = f"bounding_boxes_2d[{index}]"
        if not isinstance(box, Mapping):
            report.add(path, "must be an object")
            continue
        if "label" in box and not isinstance(box["label"], str):
            report.add(f"{path}.label", "must be a string")
        info = _check_image_ref(report, path, box, study)
        top_left, bottom_right = box.get("top_left"), box.get("bottom_right")
        for key, point in (("top_left", top_left), ("bottom_right", bottom_right)):
            if not _is_point(point):
                report.add(f"{path}.{key}", f"must be [column, row], got {point!r}")
        if not (_is_point(top_left) and _is_point(bottom_right)):
            continue
        if top_left[0] > bottom_right[0] or top_left[1] > bottom_right[1]:
            report.add(path, f"top_left {list(top_left)} must be above and left of bottom_right {list(bottom_right)}")
        if info is not None:
            _check_inside(report, path, [top_left, bottom_right], info)


def _check_inside(report: _Report, path: str, points, info: ImageInfo) -> None:
    for point in points:
        if not (0 <= point[0] <= info.columns and 0 <= point[1] <= info.rows):
            report.add(path, f"point {list(point)} lies outside the {info.columns} x {info.rows} image")


def _check_measurements(report: _Report, items, study: StudyIndex | None) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        report.add("linear_measurements_2d", "must be a list")
        return
    for index, item in enumerate(items):
        path = f"linear_measurements_2d[{index}]"
        if not isinstance(item, Mapping):
            report.add(path, "must be an object")
            continue
        info = _check_image_ref(report, path, item, study)
        kind = item.get("coordinates_type")
        if kind not in COORDINATE_TYPES:
            report.add(f"{path}.coordinates_type", f"must be \"pixel\" or \"world\", got {kind!r}")
        points = [item.get("start"), item.get("end")]
        for key, point in zip(("start", "end"), points, strict=True):
            if not _is_point(point):
                report.add(f"{path}.{key}", f"must be [x, y], got {point!r}")
        if info is not None and kind == "pixel" and all(_is_point(p) for p in points):
            _check_inside(report, path, points, info)
