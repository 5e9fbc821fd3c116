"""Turns what a model returned into the protocol's form, and refuses it if it breaks the protocol.

Both model styles end here: the typed `Result` and the Arterys-style `(json, buffers)` pair of a ported
handler. Each becomes a result JSON plus one byte buffer per part, then `arterys_http.protocol.check_result`
judges it against the input study. Nothing is sent before that, so the viewer never gets a malformed
answer; the model author gets every problem in one message.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pydicom

from arterys_http.protocol import PROTOCOL_VERSION, StudyIndex, check_result
from worker.sdk.mask_axes import shape_hints
from worker.sdk.model import BoundingBox, ConformanceCheck, DicomOutput, LinearMeasurement, Mask, Palette, Result
from worker.serving.errors import InvalidResult


@dataclass
class WireResult:
    """A checked result: the JSON and one contiguous byte buffer per entry of its `parts`."""

    json: dict
    binaries: list[memoryview]


def mask_bytes(array, binary_type: str, where: str) -> memoryview:
    """The protocol's bytes for a mask array: uint8, C order of the logical shape, whatever the layout."""
    if not isinstance(array, np.ndarray):
        raise InvalidResult([f"{where}: a mask must be a numpy array, got {type(array).__name__}"])
    if array.dtype == np.bool_ and binary_type == "boolean_mask":
        array = array.view(np.uint8)
    if array.dtype != np.uint8:
        hint = " (probabilities 0..1: (p * 255).round().astype(np.uint8))" if array.dtype.kind == "f" else ""
        raise InvalidResult([f"{where}: mask dtype must be uint8, got {array.dtype}{hint}"])
    # ascontiguousarray copies only when the layout is not already C order (transposed, strided views).
    return memoryview(np.ascontiguousarray(array)).cast("B")


def dicom_bytes(data, where: str) -> memoryview:
    if isinstance(data, pydicom.Dataset):
        buffer = io.BytesIO()
        try:
            data.save_as(buffer, enforce_file_format=True)
        except Exception as error:  # pydicom raises ValueError, AttributeError, ... on an incomplete dataset
            raise InvalidResult([f"{where}: the pydicom Dataset cannot be written as a DICOM file: {error}"]) from error
        return buffer.getbuffer()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).cast("B")
    raise InvalidResult([f"{where}: a DICOM output must be bytes or a pydicom Dataset, got {type(data).__name__}"])


def _conformance_json(checks) -> dict | None:
    if checks is None:
        return None
    if isinstance(checks, Mapping):
        return dict(checks)
    items = []
    for check in checks:
        if isinstance(check, ConformanceCheck):
            items.append({"description": check.description, "compliant": bool(check.compliant)})
        else:
            items.append(dict(check))
    return {"recommended": items}


def _mask_json(mask: Mask, array: np.ndarray, where: str) -> dict:
    out: dict = {"label": mask.label, "binary_type": mask.binary_type}
    if array.ndim == 2:
        height, width = array.shape
        out["binary_data_shape"] = {"width": width, "height": height}
        image = {"SOPInstanceUID": mask.sop_instance_uid}
        if mask.frame_number is not None:
            image["frame_number"] = mask.frame_number
        out["dicom_image"] = image
    elif array.ndim in (3, 4):
        timepoints, depth, height, width = array.shape if array.ndim == 4 else (1, *array.shape)
        out["binary_data_shape"] = {"timepoints": timepoints, "depth": depth, "width": width, "height": height}
        out["SeriesInstanceUID"] = mask.series_instance_uid
    else:
        raise InvalidResult([
            f"{where}: a mask array must be 2D (height, width), 3D (depth, height, width) or 4D "
            f"(timepoints, depth, height, width); got shape {array.shape}"
        ])
    if mask.probability_threshold is not None:
        out["probability_threshold"] = float(mask.probability_threshold)
    if mask.palette is not None:
        out["palette"] = mask.palette
    if mask.label_map is not None:
        out["label_map"] = {str(k): v for k, v in mask.label_map.items()}
    return out


def from_result(result: Result) -> tuple[dict, list]:
    """The (json, buffers) pair of a typed Result, before checking."""
    parts_json, buffers = [], []
    for index, part in enumerate(result.parts):
        where = f"parts[{index}]"
        if isinstance(part, Mask):
            buffers.append(mask_bytes(part.array, part.binary_type, where))
            entry = _mask_json(part, np.asarray(part.array), where)
        elif isinstance(part, DicomOutput):
            buffers.append(dicom_bytes(part.data, where))
            entry = {"label": part.label, "binary_type": part.binary_type}
        else:
            raise InvalidResult([f"{where}: expected a Mask or DicomOutput, got {type(part).__name__}"])
        conformance = _conformance_json(part.conformance)
        if conformance is not None:
            entry["dicomConformance"] = conformance
        parts_json.append({**entry, **part.extra})

    out: dict = {"protocol_version": PROTOCOL_VERSION, "parts": parts_json}
    if result.bounding_boxes is not None:
        out["bounding_boxes_2d"] = [_as_json(b, BoundingBox) for b in result.bounding_boxes]
    if result.linear_measurements is not None:
        out["linear_measurements_2d"] = [_as_json(m, LinearMeasurement) for m in result.linear_measurements]
    if result.study_ml_json is not None:
        out["study_ml_json"] = result.study_ml_json
    if result.series_ml_json is not None:
        out["series_ml_json"] = dict(result.series_ml_json)
    if result.palettes is not None:
        out["palettes"] = {k: _as_json(p, Palette) for k, p in result.palettes.items()}
    out.update(result.extra)
    return out, buffers


def _as_json(value, kind):
    return value.to_json() if isinstance(value, kind) else dict(value)


def from_legacy(response_json, buffers) -> tuple[dict, list]:
    """The (json, buffers) pair of an Arterys-style handler, buffers made into bytes.

    Accepts what the original gateway accepted: numpy arrays for masks (any layout; `tostring()` of
    the original wrote them in C order, as here), bytes or file objects for DICOM outputs.
    """
    if not isinstance(response_json, Mapping):
        raise InvalidResult([f"the handler must return (dict, list), got {type(response_json).__name__} first"])
    parts = response_json.get("parts")
    parts = parts if isinstance(parts, list) else []
    out = []
    for index, buffer in enumerate(buffers or []):
        where = f"binaries[{index}]"
        declared = parts[index] if index < len(parts) and isinstance(parts[index], Mapping) else {}
        if isinstance(buffer, np.ndarray):
            out.append(mask_bytes(buffer, declared.get("binary_type", ""), where))
        elif hasattr(buffer, "read"):
            out.append(memoryview(buffer.read()).cast("B"))
        elif isinstance(buffer, (bytes, bytearray, memoryview)):
            out.append(memoryview(buffer).cast("B"))
        else:
            kind = type(buffer).__name__
            raise InvalidResult([f"{where}: expected a numpy array, bytes or a file object, got {kind}"])
    result = dict(response_json)
    # The original SDK's mocks always set these two; a handler that left them out meant the defaults.
    result.setdefault("protocol_version", PROTOCOL_VERSION)
    result.setdefault("parts", [])
    return result, out


def answer_bytes(answer) -> int:
    """About how many binary bytes a model's answer holds, before conversion (to decide where to check it)."""
    if isinstance(answer, Result):
        items = [getattr(part, "array", None) for part in answer.parts]
    elif isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[1], (list, tuple)):
        items = answer[1]
    else:
        return 0
    return sum(getattr(item, "nbytes", None) or (len(item) if isinstance(item, (bytes, bytearray)) else 0)
               for item in items if item is not None)


def checked(result_json: dict, binaries: list, study: StudyIndex | None, max_bytes: int | None = None) -> WireResult:
    problems = check_result(result_json, binaries, study)
    total = sum(len(b) for b in binaries)
    if max_bytes is not None and total > max_bytes:
        problems.append(f"the binary parts add up to {total} bytes, more than the worker sends ({max_bytes}; "
                        "--max-result-bytes)")
    if problems:
        raise InvalidResult(problems + shape_hints(result_json, study))
    try:
        # The viewer parses strict JSON: numpy scalars cannot be written at all, NaN/Infinity are not JSON.
        json.dumps(result_json, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidResult([
            f"the result cannot be sent as JSON: {error} (convert numpy values with int()/float(); "
            "NaN and Infinity are not JSON)"
        ]) from error
    return WireResult(result_json, binaries)
