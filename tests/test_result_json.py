"""contract.result_json: `from_proto(to_proto(x, sizes)) == x`, key order and integer types included."""

from __future__ import annotations

import json

import pytest

from arterys_http.protocol import check_result
from contract import inference_pb2 as pb
from contract.result_json import BINARY_TYPE_BY_NAME, binary_type_name, encode_result, from_proto, to_proto


def rich():
    """A result in the protocol's key order, with keys the contract does not know at every level."""
    return {
        "protocol_version": "1.0",
        "parts": [
            {"label": "prob", "binary_type": "probability_mask",
             "binary_data_shape": {"timepoints": 2, "depth": 3, "width": 6, "height": 4},
             "SeriesInstanceUID": "1.2.3.1", "probability_threshold": 0.35,
             "dicomConformance": {
                 "recommended": [{"description": "enough slices", "compliant": True, "severity": "low"},
                                 {"description": "even spacing", "compliant": False}],
                 "required": [{"description": "modality", "compliant": True}],
             },
             "model_part_key": {"z": 1, "a": [1, 2.5]}, "another_part_key": "x"},
            {"label": "2d", "binary_type": "boolean_mask", "binary_data_shape": {"width": 5, "height": 3},
             "dicom_image": {"SOPInstanceUID": "1.2.3.2.1", "frame_number": 4}},
            {"label": "2d single frame", "binary_type": "boolean_mask", "binary_data_shape": {"width": 5, "height": 3},
             "dicom_image": {"SOPInstanceUID": "1.2.3.2.1"}},
            {"label": "heat", "binary_type": "heatmap",
             "binary_data_shape": {"timepoints": 1, "depth": 4, "width": 5, "height": 3},
             "SeriesInstanceUID": "1.2.3.2", "palette": "hot"},
            {"label": "labels", "binary_type": "numeric_label_mask",
             "binary_data_shape": {"timepoints": 1, "depth": 3, "width": 6, "height": 4},
             "SeriesInstanceUID": "1.2.3.1", "label_map": {"2": "rim", "1": "core", "10": "edge"}},
            {"label": "sc", "binary_type": "dicom_secondary_capture"},
            {"label": "sr", "binary_type": "dicom_structured_report", "dicomConformance": {"recommended": []}},
            {"label": "gsps", "binary_type": "dicom_gsps"},
            {"label": "report", "binary_type": "dicom", "series_description": "AI report"},
        ],
        "bounding_boxes_2d": [
            {"label": "nodule", "SOPInstanceUID": "1.2.3.1.1", "top_left": [1, 2], "bottom_right": [5, 3],
             "confidence": 0.93, "id": 7},
            {"SOPInstanceUID": "1.2.3.2.1", "top_left": [0.5, 1.25], "bottom_right": [4, 2.75], "frame_number": 2},
        ],
        "linear_measurements_2d": [
            {"label": "diameter", "SOPInstanceUID": "1.2.3.1.2", "frame_number": 1, "coordinates_type": "pixel",
             "start": [0, 0], "end": [6, 4], "unit": "px"},
            {"SOPInstanceUID": "1.2.3.1.3", "coordinates_type": "world", "start": [-100.125, 30], "end": [12.5, -7]},
        ],
        "study_ml_json": {"z_first": 1, "big": 2**53 + 1, "negative": -3, "ratio": 0.5, "whole_float": 2.0,
                          "text": "7", "flag": False, "nothing": None, "list": [1, "1", 1.5, [2]],
                          "nested": {"b": {"c": [{"d": 10}]}, "a": 0}},
        "series_ml_json": {"1.2.3.2": {"label": "abnormal", "slices": 4}, "1.2.3.1": "free text", "1.2.3.9": 12},
        "palettes": {
            "hot": {"type": "anchorpoints", "data": [
                {"threshold": 0.0, "color": [0, 0, 0, 0]},
                {"threshold": 0.25, "color": [255, 128, 0, 128]},
                {"threshold": 1.0, "color": [255, 0, 0, 255]},
            ], "name_for_humans": "Hot"},
            "cold": {"type": "anchorpoints", "data": [
                {"threshold": 0.0, "color": [0, 0, 255, 0]}, {"threshold": 1.0, "color": [0, 0, 255, 255]}]},
        },
        "zz_model_key": {"version": 3},
        "aa_model_key": [1, 2],
    }


SIZES = [144, 15, 15, 60, 72, 300, 400, 500, 600]


def over_the_wire(result, sizes):
    """to_proto, serialised and parsed like gRPC does, then from_proto."""
    message = to_proto(result, sizes)
    received = pb.InferResult()
    received.ParseFromString(message.SerializeToString())
    return from_proto(received), received


def test_round_trip_is_exact():
    result = rich()
    back, message = over_the_wire(result, SIZES)
    assert back == result
    assert json.dumps(back) == json.dumps(result)  # key order at every level
    assert encode_result(back) == encode_result(result)
    assert [p.binary_size for p in message.parts] == SIZES


def test_integers_stay_integers_and_strings_stay_strings():
    back, message = over_the_wire(rich(), SIZES)
    study = back["study_ml_json"]
    assert type(study["big"]) is int and study["big"] == 2**53 + 1
    assert type(study["negative"]) is int
    assert type(study["whole_float"]) is float
    assert type(study["text"]) is str
    assert [type(v) for v in study["list"]] == [int, str, float, list]
    assert type(study["nested"]["b"]["c"][0]["d"]) is int
    assert type(back["series_ml_json"]["1.2.3.9"]) is int
    assert type(back["series_ml_json"]["1.2.3.2"]["slices"]) is int
    assert type(back["bounding_boxes_2d"][0]["id"]) is int
    assert '"big": 9007199254740993' in message.study_ml_json  # JSON text on the wire, not a double


def test_key_order_is_kept_for_free_json_and_extra_keys():
    back, message = over_the_wire(rich(), SIZES)
    assert list(back)[-2:] == ["zz_model_key", "aa_model_key"]
    assert list(back["study_ml_json"]) == list(rich()["study_ml_json"])
    assert list(back["study_ml_json"]["nested"]) == ["b", "a"]
    assert list(back["series_ml_json"]) == ["1.2.3.2", "1.2.3.1", "1.2.3.9"]
    assert list(back["palettes"]) == ["hot", "cold"]
    assert list(back["parts"][4]["label_map"]) == ["2", "1", "10"]
    assert list(back["parts"][0])[-2:] == ["model_part_key", "another_part_key"]
    assert json.loads(message.extra_json) == {"zz_model_key": {"version": 3}, "aa_model_key": [1, 2]}


def test_unknown_keys_travel_at_every_level():
    back, message = over_the_wire(rich(), SIZES)
    assert back["parts"][0]["model_part_key"] == {"z": 1, "a": [1, 2.5]}
    assert back["parts"][0]["dicomConformance"]["required"] == [{"description": "modality", "compliant": True}]
    assert back["parts"][0]["dicomConformance"]["recommended"][0]["severity"] == "low"
    assert back["parts"][8]["series_description"] == "AI report"
    assert back["bounding_boxes_2d"][0]["confidence"] == 0.93
    assert back["linear_measurements_2d"][0]["unit"] == "px"
    assert back["palettes"]["hot"]["name_for_humans"] == "Hot"
    # Known keys are typed fields, not JSON text.
    assert message.parts[0].binary_type == pb.PROBABILITY_MASK
    assert message.parts[1].dicom_image.frame_number == 4
    assert not message.parts[2].dicom_image.HasField("frame_number")
    assert message.bounding_boxes_2d.items[1].frame_number == 2
    assert message.palettes.items[0].data[1].color == [255, 128, 0, 128]


def test_absent_and_empty_stay_distinct():
    minimal = {"protocol_version": "1.0", "parts": []}
    assert over_the_wire(minimal, [])[0] == minimal
    empty = {"protocol_version": "1.0", "parts": [], "bounding_boxes_2d": [], "linear_measurements_2d": [],
             "study_ml_json": {}, "series_ml_json": {}, "palettes": {}}
    assert json.dumps(over_the_wire(empty, [])[0]) == json.dumps(empty)
    null_study = {"protocol_version": "1.0", "parts": [], "study_ml_json": None}
    assert over_the_wire(null_study, [])[0] == null_study


def test_canonical_forms():
    """Integral pixel coordinates come back as integers, thresholds as floats; nothing else changes."""
    result = {"protocol_version": "1.0", "parts": [
        {"label": "p", "binary_type": "probability_mask", "binary_data_shape": {"width": 2, "height": 2},
         "dicom_image": {"SOPInstanceUID": "1"}, "probability_threshold": 1}],
        "bounding_boxes_2d": [{"SOPInstanceUID": "1", "top_left": [1.0, 2.5], "bottom_right": [3, 4.0]}]}
    back, _ = over_the_wire(result, [4])
    assert back["bounding_boxes_2d"][0]["top_left"] == [1, 2.5]
    assert [type(v) for v in back["bounding_boxes_2d"][0]["top_left"]] == [int, float]
    assert [type(v) for v in back["bounding_boxes_2d"][0]["bottom_right"]] == [int, int]
    assert type(back["parts"][0]["probability_threshold"]) is float


def test_every_binary_type_maps_to_its_enum_and_back():
    assert set(BINARY_TYPE_BY_NAME) == {
        "probability_mask", "boolean_mask", "heatmap", "numeric_label_mask",
        "dicom_secondary_capture", "dicom", "dicom_structured_report", "dicom_gsps",
    }
    for name, value in BINARY_TYPE_BY_NAME.items():
        assert pb.BinaryType.Name(value).lower() == name
        assert binary_type_name(pb.Part(binary_type=value)) == name


def test_parts_and_sizes_must_agree():
    with pytest.raises(ValueError, match="9 parts but 8 binaries"):
        to_proto(rich(), SIZES[:-1])


@pytest.mark.parametrize("value", [42, pb.BINARY_TYPE_UNSPECIFIED])
def test_an_unknown_binary_type_on_the_wire_is_reported_by_the_check(value):
    """A newer (or broken) worker's enum value must not pass silently as some known type."""
    message = pb.InferResult(protocol_version="1.0", parts=[pb.Part(label="x", binary_type=value, binary_size=4)])
    received = pb.InferResult()
    received.ParseFromString(message.SerializeToString())
    assert received.parts[0].binary_type == value  # proto3 enums are open: the number survives parsing
    result = from_proto(received)
    assert result["parts"][0]["binary_type"] == value
    problems = check_result(result, [4])
    assert problems == [f"parts[0].binary_type: unknown value {value!r}; known: " + ", ".join(BINARY_TYPE_BY_NAME)]


def test_the_round_tripped_rich_result_still_passes_the_check():
    back, _ = over_the_wire(rich(), SIZES)
    dicom = b"\0" * 128 + b"DICM" + bytes(10)
    binaries = [bytes(s) for s in SIZES[:5]] + [dicom] * 4
    assert check_result(back, binaries) == []
