"""Translation between the result JSON of docs/protocol.md and the typed `InferResult` message.

The worker turns what a model returned into the message (`to_proto`); the bridge turns the message back
into the JSON the viewer reads (`from_proto`). Keys the contract does not know travel as JSON text
(`extra_json`) and come back, so that `from_proto(to_proto(x)) == x` for every valid result without empty
UID strings (last point below). The JSON text is the same too, apart from these canonical forms:

- known keys come in the protocol's order and unknown keys after them, each in its own order;
- integral pixel coordinates are integers; probability and palette thresholds are floats (`0.5`, `1.0`);
- an empty string where the protocol expects a UID or palette name (`"SeriesInstanceUID": ""`,
  `"palette": ""`) is the same as leaving the key out, and is left out.

`to_proto` expects a result that `arterys_http.protocol.check_result` accepted; it raises ValueError on
anything it cannot represent rather than guessing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from arterys_http.protocol import PROTOCOL_VERSION, SHAPE_2D, SHAPE_3D
from contract import inference_pb2 as pb

BINARY_TYPE_BY_NAME = {
    "probability_mask": pb.PROBABILITY_MASK,
    "boolean_mask": pb.BOOLEAN_MASK,
    "heatmap": pb.HEATMAP,
    "numeric_label_mask": pb.NUMERIC_LABEL_MASK,
    "dicom_secondary_capture": pb.DICOM_SECONDARY_CAPTURE,
    "dicom": pb.DICOM,
    "dicom_structured_report": pb.DICOM_STRUCTURED_REPORT,
    "dicom_gsps": pb.DICOM_GSPS,
}
BINARY_TYPE_NAME = {value: name for name, value in BINARY_TYPE_BY_NAME.items()}

_TOP_KEYS = (
    "protocol_version", "parts", "bounding_boxes_2d", "linear_measurements_2d",
    "study_ml_json", "series_ml_json", "palettes",
)
_BOX_KEYS = ("label", "SOPInstanceUID", "top_left", "bottom_right", "frame_number")
_MEASUREMENT_KEYS = ("label", "SOPInstanceUID", "frame_number", "coordinates_type", "start", "end")
_PART_KEYS = (
    "label", "binary_type", "binary_data_shape", "SeriesInstanceUID", "dicom_image",
    "probability_threshold", "palette", "label_map", "dicomConformance",
)


def dumps_json(value) -> str:
    """The one JSON serialisation used on the wire (what the original gateway's json.dumps wrote)."""
    return json.dumps(value)


def encode_result(result: Mapping) -> bytes:
    """The result JSON part's bytes, as sent and hashed."""
    return dumps_json(result).encode("utf-8")


def _extra(obj: Mapping, known: Sequence[str]) -> str:
    rest = {k: v for k, v in obj.items() if k not in known}
    return dumps_json(rest) if rest else ""


def _restore_extra(target: dict, extra_json: str) -> dict:
    if extra_json:
        target.update(json.loads(extra_json))
    return target


def _point(value) -> pb.Point2D:
    x, y = value
    return pb.Point2D(x=float(x), y=float(y))


def _point_json(point: pb.Point2D) -> list:
    return [int(v) if float(v).is_integer() else v for v in (point.x, point.y)]


# --------------------------------------------------------------------------------------------- to_proto


def to_proto(result: Mapping, binary_sizes: Sequence[int]) -> pb.InferResult:
    """The typed message for a checked result JSON; `binary_sizes[i]` is the length of binary i."""
    version = result.get("protocol_version", PROTOCOL_VERSION)
    message = pb.InferResult(protocol_version=version, extra_json=_extra(result, _TOP_KEYS))
    parts = result.get("parts") or []
    if len(parts) != len(binary_sizes):
        raise ValueError(f"{len(parts)} parts but {len(binary_sizes)} binaries")
    message.parts.extend(_part(part, size) for part, size in zip(parts, binary_sizes, strict=True))
    if "bounding_boxes_2d" in result:
        message.bounding_boxes_2d.SetInParent()
        message.bounding_boxes_2d.items.extend(_box(b) for b in result["bounding_boxes_2d"])
    if "linear_measurements_2d" in result:
        message.linear_measurements_2d.SetInParent()
        message.linear_measurements_2d.items.extend(_measurement(m) for m in result["linear_measurements_2d"])
    if "study_ml_json" in result:
        message.study_ml_json = dumps_json(result["study_ml_json"])
    if "series_ml_json" in result:
        message.series_ml_json.SetInParent()
        message.series_ml_json.items.extend(
            pb.SeriesJson(series_instance_uid=uid, json=dumps_json(value))
            for uid, value in result["series_ml_json"].items()
        )
    if "palettes" in result:
        message.palettes.SetInParent()
        message.palettes.items.extend(_palette(name, p) for name, p in result["palettes"].items())
    return message


def _box(box: Mapping) -> pb.BoundingBox2D:
    message = pb.BoundingBox2D(
        sop_instance_uid=box["SOPInstanceUID"],
        top_left=_point(box["top_left"]),
        bottom_right=_point(box["bottom_right"]),
        extra_json=_extra(box, _BOX_KEYS),
    )
    if "label" in box:
        message.label = box["label"]
    if "frame_number" in box:
        message.frame_number = box["frame_number"]
    return message


def _measurement(item: Mapping) -> pb.LinearMeasurement2D:
    message = pb.LinearMeasurement2D(
        sop_instance_uid=item["SOPInstanceUID"],
        coordinates_type=item["coordinates_type"],
        start=_point(item["start"]),
        end=_point(item["end"]),
        extra_json=_extra(item, _MEASUREMENT_KEYS),
    )
    if "label" in item:
        message.label = item["label"]
    if "frame_number" in item:
        message.frame_number = item["frame_number"]
    return message


def _part(part: Mapping, size: int) -> pb.Part:
    message = pb.Part(
        label=part["label"],
        binary_type=BINARY_TYPE_BY_NAME[part["binary_type"]],
        binary_size=size,
        extra_json=_extra(part, _PART_KEYS),
    )
    shape = part.get("binary_data_shape")
    if shape is not None:
        message.binary_data_shape.CopyFrom(pb.BinaryDataShape(**{k: shape[k] for k in SHAPE_3D if k in shape}))
    if "SeriesInstanceUID" in part:
        message.series_instance_uid = part["SeriesInstanceUID"]
    image = part.get("dicom_image")
    if image is not None:
        message.dicom_image.sop_instance_uid = image["SOPInstanceUID"]
        if "frame_number" in image:
            message.dicom_image.frame_number = image["frame_number"]
    if "probability_threshold" in part:
        message.probability_threshold = float(part["probability_threshold"])
    if "palette" in part:
        message.palette = part["palette"]
    if "label_map" in part:
        message.label_map.SetInParent()
        message.label_map.entries.extend(pb.LabelEntry(value=k, name=v) for k, v in part["label_map"].items())
    conformance = part.get("dicomConformance")
    if conformance is not None:
        message.dicom_conformance.CopyFrom(_conformance(conformance))
    return message


def _conformance(conformance: Mapping) -> pb.Conformance:
    message = pb.Conformance(extra_json=_extra(conformance, ("recommended",)))
    for item in conformance["recommended"]:
        message.recommended.add(
            description=item["description"],
            compliant=item["compliant"],
            extra_json=_extra(item, ("description", "compliant")),
        )
    return message


def _palette(name: str, palette: Mapping) -> pb.Palette:
    message = pb.Palette(name=name, type=palette["type"], extra_json=_extra(palette, ("type", "data")))
    for point in palette["data"]:
        message.data.add(threshold=float(point["threshold"]), color=point["color"])
    return message


# ------------------------------------------------------------------------------------------- from_proto


def from_proto(message: pb.InferResult) -> dict:
    """The result JSON for a typed message, keys in the protocol's order, then the extra keys."""
    result: dict = {"protocol_version": message.protocol_version, "parts": [_part_json(p) for p in message.parts]}
    if message.HasField("bounding_boxes_2d"):
        result["bounding_boxes_2d"] = [_box_json(b) for b in message.bounding_boxes_2d.items]
    if message.HasField("linear_measurements_2d"):
        result["linear_measurements_2d"] = [_measurement_json(m) for m in message.linear_measurements_2d.items]
    if message.HasField("study_ml_json"):
        result["study_ml_json"] = json.loads(message.study_ml_json)
    if message.HasField("series_ml_json"):
        result["series_ml_json"] = {s.series_instance_uid: json.loads(s.json) for s in message.series_ml_json.items}
    if message.HasField("palettes"):
        result["palettes"] = {p.name: _palette_json(p) for p in message.palettes.items}
    return _restore_extra(result, message.extra_json)


def _box_json(box: pb.BoundingBox2D) -> dict:
    out: dict = {}
    if box.HasField("label"):
        out["label"] = box.label
    out["SOPInstanceUID"] = box.sop_instance_uid
    out["top_left"] = _point_json(box.top_left)
    out["bottom_right"] = _point_json(box.bottom_right)
    if box.HasField("frame_number"):
        out["frame_number"] = box.frame_number
    return _restore_extra(out, box.extra_json)


def _measurement_json(item: pb.LinearMeasurement2D) -> dict:
    out: dict = {}
    if item.HasField("label"):
        out["label"] = item.label
    out["SOPInstanceUID"] = item.sop_instance_uid
    if item.HasField("frame_number"):
        out["frame_number"] = item.frame_number
    out["coordinates_type"] = item.coordinates_type
    out["start"] = _point_json(item.start)
    out["end"] = _point_json(item.end)
    return _restore_extra(out, item.extra_json)


def binary_type_name(part: pb.Part) -> str | None:
    """The protocol's name for a part's binary type; None for a value this contract does not know."""
    return BINARY_TYPE_NAME.get(part.binary_type)


def _part_json(part: pb.Part) -> dict:
    # An unknown enum value is kept as its number so that the protocol check reports it (bridge: 502).
    out: dict = {"label": part.label, "binary_type": binary_type_name(part) or part.binary_type}
    if part.HasField("binary_data_shape"):
        shape = part.binary_data_shape
        keys = SHAPE_3D if shape.depth or shape.timepoints else SHAPE_2D
        out["binary_data_shape"] = {k: getattr(shape, k) for k in keys}
    if part.series_instance_uid:
        out["SeriesInstanceUID"] = part.series_instance_uid
    if part.HasField("dicom_image"):
        image: dict = {"SOPInstanceUID": part.dicom_image.sop_instance_uid}
        if part.dicom_image.HasField("frame_number"):
            image["frame_number"] = part.dicom_image.frame_number
        out["dicom_image"] = image
    if part.HasField("probability_threshold"):
        out["probability_threshold"] = part.probability_threshold
    if part.palette:
        out["palette"] = part.palette
    if part.HasField("label_map"):
        out["label_map"] = {e.value: e.name for e in part.label_map.entries}
    if part.HasField("dicom_conformance"):
        conformance = part.dicom_conformance
        items = [
            _restore_extra({"description": i.description, "compliant": i.compliant}, i.extra_json)
            for i in conformance.recommended
        ]
        out["dicomConformance"] = _restore_extra({"recommended": items}, conformance.extra_json)
    return _restore_extra(out, part.extra_json)


def _palette_json(palette: pb.Palette) -> dict:
    data = [{"threshold": p.threshold, "color": list(p.color)} for p in palette.data]
    return _restore_extra({"type": palette.type, "data": data}, palette.extra_json)
