"""arterys_http.protocol.check_result: a valid rich result passes; each rule, broken alone, is reported."""

from __future__ import annotations

import copy
import hashlib

import pytest

from arterys_http.protocol import (
    BINARY_TYPES,
    ImageInfo,
    StudyIndex,
    check_hashes_line,
    check_result,
    hashes_line,
    is_dicom_file,
    mask_length,
    sha256_hex,
)

STUDY = StudyIndex.of([
    ImageInfo("1.1", "S1", rows=4, columns=6),
    ImageInfo("1.2", "S1", rows=4, columns=6),
    ImageInfo("1.3", "S1", rows=4, columns=6),
    ImageInfo("2.1", "S2", rows=3, columns=5, frames=4),
])
DICOM_FILE = b"\0" * 128 + b"DICM" + b"\2\0\0\0" * 8


def shape3d(depth, width, height, timepoints=1):
    return {"timepoints": timepoints, "depth": depth, "width": width, "height": height}


def good():
    """A result using every part type and annotation, valid for STUDY, and its binaries."""
    labels = bytearray(72)
    labels[0], labels[71] = 1, 2
    result = {
        "protocol_version": "1.0",
        "parts": [
            {"label": "prob", "binary_type": "probability_mask", "binary_data_shape": shape3d(3, 6, 4),
             "SeriesInstanceUID": "S1", "probability_threshold": 0.5,
             "dicomConformance": {"recommended": [{"description": "enough slices", "compliant": True},
                                                  {"description": "even spacing", "compliant": False}]}},
            {"label": "one frame", "binary_type": "boolean_mask", "binary_data_shape": {"width": 5, "height": 3},
             "dicom_image": {"SOPInstanceUID": "2.1", "frame_number": 4}},
            {"label": "heat", "binary_type": "heatmap", "binary_data_shape": shape3d(2, 5, 3, timepoints=2),
             "SeriesInstanceUID": "S2", "palette": "hot"},
            {"label": "labels", "binary_type": "numeric_label_mask", "binary_data_shape": shape3d(3, 6, 4),
             "SeriesInstanceUID": "S1", "label_map": {"1": "core", "2": "rim"}},
            {"label": "sc", "binary_type": "dicom_secondary_capture"},
            {"label": "sr", "binary_type": "dicom_structured_report"},
            {"label": "gsps", "binary_type": "dicom_gsps"},
            {"label": "any dicom", "binary_type": "dicom", "dicomConformance": {"recommended": []}},
        ],
        "bounding_boxes_2d": [
            {"label": "nodule", "SOPInstanceUID": "1.1", "top_left": [0, 0], "bottom_right": [6, 4]},
            {"SOPInstanceUID": "2.1", "frame_number": 2, "top_left": [1.5, 1], "bottom_right": [2, 2.25]},
        ],
        "linear_measurements_2d": [
            {"label": "width", "SOPInstanceUID": "1.2", "coordinates_type": "pixel", "start": [0, 0], "end": [6, 4]},
            {"SOPInstanceUID": "2.1", "frame_number": 1, "coordinates_type": "world", "start": [-100.5, 300],
             "end": [1000, 2]},
        ],
        "study_ml_json": {"anything": [1, "two", None]},
        "series_ml_json": {"S1": {"label": "normal"}, "S2": "free text"},
        "palettes": {"hot": {"type": "anchorpoints", "data": [
            {"threshold": 0.0, "color": [0, 0, 0, 0]},
            {"threshold": 0.5, "color": [255, 128, 0, 128]},
            {"threshold": 1, "color": [255, 0, 0, 255]},
        ]}},
        "model_specific_key": {"kept": True},
    }
    binaries = [bytes(72), bytes(15), bytes(60), bytes(labels), DICOM_FILE, DICOM_FILE, DICOM_FILE, DICOM_FILE]
    return result, binaries


def test_the_good_result_passes():
    result, binaries = good()
    assert check_result(result, binaries, STUDY) == []
    assert check_result(result, [len(b) for b in binaries], STUDY) == []  # sizes only, as a streaming receiver
    assert check_result(result, binaries) == []  # without the study
    assert check_result({"protocol_version": "1.0", "parts": []}, []) == []


def test_every_binary_type_is_known():
    assert set(BINARY_TYPES) == {
        "probability_mask", "boolean_mask", "heatmap", "numeric_label_mask",
        "dicom_secondary_capture", "dicom", "dicom_structured_report", "dicom_gsps",
    }


def part(r, index):
    return r["parts"][index]


def _set(path, value):
    """A mutator setting result[path...] = value (path items are keys or indexes)."""
    def mutate(r, b):
        target = r
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(r, b):
        target = r
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _binary(index, value):
    def mutate(r, b):
        b[index] = value
    return mutate


PALETTE = ["palettes", "hot"]
POINTS = [*PALETTE, "data"]

BAD = {
    # top level
    "version": (_set(["protocol_version"], "2.0"), "protocol_version: must be \"1.0\", got '2.0'"),
    "no version": (_delete(["protocol_version"]), "protocol_version: must be \"1.0\", got None"),
    "parts not a list": (_set(["parts"], {}), "parts: must be a list (use [] when there is no binary)"),
    "missing binary": (lambda r, b: b.pop(), "8 entries declared but 7 binaries returned"),
    "extra binary": (lambda r, b: b.append(b"x"), "8 entries declared but 9 binaries returned"),
    # parts
    "part not an object": (_set(["parts", 0], "mask"), "parts[0]: must be an object, got str"),
    "label not a string": (_set(["parts", 0, "label"], 3), "parts[0].label: must be a string"),
    "unknown binary_type": (_set(["parts", 0, "binary_type"], "probability"),
                            "parts[0].binary_type: unknown value 'probability'; known: probability_mask"),
    "DICOM part with a shape": (_set(["parts", 4, "binary_data_shape"], {"width": 5, "height": 3}),
                                "parts[4].binary_data_shape: a dicom_secondary_capture part is a DICOM file"),
    "DICOM part not DICOM": (_binary(5, b"%PDF" + bytes(200)),
                             "parts[5]: a dicom_structured_report binary must be a DICOM Part 10 file"),
    "DICOM part too short": (_binary(6, b"DICM"), "parts[6]: a dicom_gsps binary must be a DICOM Part 10 file"),
    "mask without shape": (_delete(["parts", 0, "binary_data_shape"]),
                           "parts[0].binary_data_shape: a mask needs binary_data_shape"),
    "zero in shape": (_set(["parts", 0, "binary_data_shape", "depth"], 0),
                      "parts[0].binary_data_shape.depth: must be a positive integer, got 0"),
    "float in shape": (_set(["parts", 0, "binary_data_shape", "width"], 6.0),
                       "parts[0].binary_data_shape.width: must be a positive integer, got 6.0"),
    "bool in shape": (_set(["parts", 1, "binary_data_shape", "height"], True),
                      "parts[1].binary_data_shape.height: must be a positive integer, got True"),
    "unknown shape key": (_set(["parts", 1, "binary_data_shape", "size"], 15),
                          "parts[1].binary_data_shape: unknown keys ['size']"),
    "3D shape missing timepoints": (_delete(["parts", 0, "binary_data_shape", "timepoints"]),
                                    "parts[0].binary_data_shape: a 3D mask needs timepoints"),
    "2D shape missing height": (_delete(["parts", 1, "binary_data_shape", "height"]),
                                "parts[1].binary_data_shape: a 2D mask needs height"),
    "3D mask without series": (_delete(["parts", 0, "SeriesInstanceUID"]),
                               "parts[0].SeriesInstanceUID: a 3D mask must name the series it covers"),
    "3D mask of an unknown series": (_set(["parts", 0, "SeriesInstanceUID"], "S9"),
                                     "parts[0].SeriesInstanceUID: names no series of the input study"),
    "3D mask with swapped width and height": (
        lambda r, b: r["parts"][0].update(binary_data_shape=shape3d(3, 4, 6)),
        "parts[0].binary_data_shape: width x height is 4 x 6 but the series' images are 6 x 4 (columns x rows)"),
    "3D mask with the wrong depth": (
        lambda r, b: (r["parts"][0].update(binary_data_shape=shape3d(2, 6, 4)), b.__setitem__(0, bytes(48))),
        "parts[0].binary_data_shape: depth x timepoints is 2 x 1 but the series has 3 images"),
    "3D mask counting instances of a multi-frame series": (
        lambda r, b: (r["parts"][2].update(binary_data_shape=shape3d(1, 5, 3)), b.__setitem__(2, bytes(15))),
        "parts[2].binary_data_shape: depth x timepoints is 1 x 1 but the series has 4 images"),
    "mask length": (_binary(0, bytes(71)), "parts[0]: binary_data_shape timepoints=1, depth=3, width=6, height=4 "
                                           "needs 72 bytes (one uint8 per voxel) but the binary has 71"),
    "2D mask length": (_binary(1, bytes(16)), "parts[1]: binary_data_shape width=5, height=3 needs 15 bytes"),
    "2D mask without image": (_delete(["parts", 1, "dicom_image"]),
                              "parts[1].dicom_image: a 2D mask needs dicom_image.SOPInstanceUID"),
    "2D mask frame 0": (_set(["parts", 1, "dicom_image", "frame_number"], 0),
                        "parts[1].dicom_image.frame_number: must be an integer >= 1 (frames count from 1), got 0"),
    "2D mask frame beyond": (_set(["parts", 1, "dicom_image", "frame_number"], 5),
                             "parts[1].dicom_image: frame_number 5 but the instance has 4 frame(s)"),
    "2D mask of an unknown image": (_set(["parts", 1, "dicom_image", "SOPInstanceUID"], "9.9"),
                                    "parts[1].dicom_image.SOPInstanceUID: names no instance"),
    "2D mask of the wrong size": (
        lambda r, b: r["parts"][1].update(binary_data_shape={"width": 3, "height": 5}),
        "parts[1].binary_data_shape: width x height is 3 x 5 but the image is 5 x 3 (columns x rows)"),
    "probability threshold above 1": (_set(["parts", 0, "probability_threshold"], 1.5),
                                      "parts[0].probability_threshold: must be a number in 0..1, got 1.5"),
    "probability threshold as text": (_set(["parts", 0, "probability_threshold"], "0.5"),
                                      "parts[0].probability_threshold: must be a number in 0..1, got '0.5'"),
    "heatmap palette missing": (_set(["parts", 2, "palette"], "cold"),
                                "parts[2].palette: 'cold' names no entry of the top-level palettes object"),
    "label mask without label_map": (_delete(["parts", 3, "label_map"]),
                                     "parts[3].label_map: a numeric_label_mask needs a label_map"),
    "empty label_map": (_set(["parts", 3, "label_map"], {}), "parts[3].label_map: a numeric_label_mask needs"),
    "label_map key not digits": (_set(["parts", 3, "label_map"], {"1": "core", "2": "rim", "x3": "edge"}),
                                 "parts[3].label_map: key 'x3' must be a digit string such as \"1\""),
    "label_map negative key": (_set(["parts", 3, "label_map"], {"1": "core", "2": "rim", "-1": "edge"}),
                               "key '-1' must be a digit string"),
    "label_map empty name": (_set(["parts", 3, "label_map", "2"], ""),
                             "parts[3].label_map['2']: must be a non-empty name"),
    "label_map duplicate names": (_set(["parts", 3, "label_map", "2"], "core"),
                                  "parts[3].label_map: label names must be unique; repeated: ['core']"),
    "label values without entry": (_binary(3, bytes([0, 1, 2, 3, 9] + [0] * 67)),
                                   "parts[3].label_map: mask values [3, 9] have no entry in label_map"),
    # conformance
    "conformance not an object": (_set(["parts", 0, "dicomConformance"], ["ok"]),
                                  "parts[0].dicomConformance: must be {\"recommended\""),
    "conformance item without boolean": (_set(["parts", 0, "dicomConformance", "recommended", 0, "compliant"], "yes"),
                                         "parts[0].dicomConformance.recommended[0]: needs a string description "
                                         "and a boolean compliant"),
    "conformance without recommended": (_delete(["parts", 7, "dicomConformance", "recommended"]),
                                        "parts[7].dicomConformance: must be"),
    "conformance item without description": (_delete(["parts", 0, "dicomConformance", "recommended", 1,
                                                      "description"]),
                                             "parts[0].dicomConformance.recommended[1]: needs a string description"),
    # palettes
    "palettes not an object": (_set(["palettes"], []), "palettes: must be an object of named palettes"),
    "palette not an object": (_set(PALETTE, "red"), "palettes['hot']: must be an object {type, data}"),
    "palette type": (_set([*PALETTE, "type"], "gradient"),
                     "palettes['hot'].type: must be \"anchorpoints\", got 'gradient'"),
    "palette with one point": (_set(POINTS, [{"threshold": 0.0, "color": [0, 0, 0, 0]}]),
                               "palettes['hot'].data: needs at least two anchor points"),
    "palette point not an object": (_set([*POINTS, 1], [0.5, [0, 0, 0, 0]]),
                                    "palettes['hot'].data[1]: must be an object {threshold, color}"),
    "palette threshold out of range": (_set([*POINTS, 1, "threshold"], -0.1),
                                       "palettes['hot'].data[1].threshold: must be a number in 0..1, got -0.1"),
    "palette colour with three values": (_set([*POINTS, 1, "color"], [255, 128, 0]),
                                         "palettes['hot'].data[1].color: must be four integers 0..255"),
    "palette colour above 255": (_set([*POINTS, 2, "color"], [256, 0, 0, 255]),
                                 "palettes['hot'].data[2].color: must be four integers 0..255 [r, g, b, a], "
                                 "got [256, 0, 0, 255]"),
    "palette colour as float": (_set([*POINTS, 0, "color"], [0, 0, 0, 0.5]),
                                "palettes['hot'].data[0].color: must be four integers"),
    "palette first threshold": (_set([*POINTS, 0, "threshold"], 0.1),
                                "palettes['hot'].data: the first threshold must be 0.0 and the last 1.0"),
    "palette last threshold": (_set([*POINTS, 2, "threshold"], 0.9),
                               "palettes['hot'].data: the first threshold must be 0.0 and the last 1.0"),
    "palette thresholds out of order": (lambda r, b: r["palettes"]["hot"]["data"].insert(
                                            2, {"threshold": 0.2, "color": [0, 0, 0, 0]}),
                                        "palettes['hot'].data: thresholds must be in ascending order"),
    # bounding boxes
    "boxes not a list": (_set(["bounding_boxes_2d"], {}), "bounding_boxes_2d: must be a list"),
    "box not an object": (_set(["bounding_boxes_2d", 0], [0, 0, 1, 1]), "bounding_boxes_2d[0]: must be an object"),
    "box label not a string": (_set(["bounding_boxes_2d", 0, "label"], None),
                               "bounding_boxes_2d[0].label: must be a string"),
    "box without image": (_delete(["bounding_boxes_2d", 0, "SOPInstanceUID"]),
                          "bounding_boxes_2d[0].SOPInstanceUID: must name the input instance"),
    "box on an unknown image": (_set(["bounding_boxes_2d", 0, "SOPInstanceUID"], "7.7"),
                                "bounding_boxes_2d[0].SOPInstanceUID: names no instance of the input study"),
    "box frame 0": (_set(["bounding_boxes_2d", 1, "frame_number"], 0),
                    "bounding_boxes_2d[1].frame_number: must be an integer >= 1"),
    "box frame beyond": (_set(["bounding_boxes_2d", 1, "frame_number"], 9),
                         "frame_number 9 but the instance has 4 frame(s)"),
    "box point with three values": (_set(["bounding_boxes_2d", 0, "top_left"], [0, 0, 0]),
                                    "bounding_boxes_2d[0].top_left: must be [column, row], got [0, 0, 0]"),
    "box point of booleans": (_set(["bounding_boxes_2d", 0, "bottom_right"], [True, 1]),
                              "bounding_boxes_2d[0].bottom_right: must be [column, row]"),
    "box upside down": (_set(["bounding_boxes_2d", 0, "top_left"], [2, 5]),
                        "bounding_boxes_2d[0]: top_left [2, 5] must be above and left of bottom_right [6, 4]"),
    "box outside": (_set(["bounding_boxes_2d", 0, "bottom_right"], [7, 4]),
                    "bounding_boxes_2d[0]: point [7, 4] lies outside the 6 x 4 image"),
    "box negative": (_set(["bounding_boxes_2d", 1, "top_left"], [-1, 0]),
                     "bounding_boxes_2d[1]: point [-1, 0] lies outside the 5 x 3 image"),
    # linear measurements
    "measurements not a list": (_set(["linear_measurements_2d"], "none"), "linear_measurements_2d: must be a list"),
    "measurement not an object": (_set(["linear_measurements_2d", 0], 3),
                                  "linear_measurements_2d[0]: must be an object"),
    "measurement coordinates type": (_set(["linear_measurements_2d", 0, "coordinates_type"], "voxel"),
                                     "linear_measurements_2d[0].coordinates_type: must be \"pixel\" or \"world\""),
    "measurement without end": (_delete(["linear_measurements_2d", 0, "end"]),
                                "linear_measurements_2d[0].end: must be [x, y], got None"),
    "measurement outside in pixels": (_set(["linear_measurements_2d", 0, "end"], [6.5, 4]),
                                      "linear_measurements_2d[0]: point [6.5, 4] lies outside the 6 x 4 image"),
    "measurement on an unknown image": (_set(["linear_measurements_2d", 1, "SOPInstanceUID"], "3.3"),
                                        "linear_measurements_2d[1].SOPInstanceUID: names no instance"),
    # free JSON
    "series_ml_json not an object": (_set(["series_ml_json"], ["S1"]),
                                     "series_ml_json: must be an object keyed by SeriesInstanceUID"),
    "series_ml_json of an unknown series": (_set(["series_ml_json", "S7"], {}),
                                            "series_ml_json (key 3): names no series of the input study"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_rule_reports_its_violation(case):
    mutate, expected = BAD[case]
    result, binaries = good()
    mutate(result, binaries)
    problems = check_result(result, binaries, STUDY)
    assert any(expected in problem for problem in problems), problems


def test_study_dependent_rules_are_skipped_without_the_study():
    result, binaries = good()
    result["parts"][0]["SeriesInstanceUID"] = "S9"
    result["bounding_boxes_2d"][0]["SOPInstanceUID"] = "7.7"
    result["series_ml_json"]["S7"] = {}
    assert check_result(result, binaries) == []
    assert len(check_result(result, binaries, STUDY)) == 3


def test_every_problem_is_reported_at_once():
    result, binaries = good()
    result["protocol_version"] = "0.9"
    result["parts"][0]["probability_threshold"] = 2
    result["bounding_boxes_2d"][0]["bottom_right"] = [60, 40]
    binaries[1] = bytes(3)
    problems = check_result(result, binaries, STUDY)
    assert len(problems) == 4, problems


def test_a_result_that_is_not_an_object():
    assert check_result([], []) == ["the result must be a JSON object, got list"]


def test_world_coordinates_are_not_bounded_by_the_image():
    result, binaries = good()
    result["linear_measurements_2d"][1]["start"] = [-5000.25, 99999]
    assert check_result(result, binaries, STUDY) == []


def test_four_dimensional_masks_count_timepoints_times_depth():
    result, binaries = good()
    result["parts"][0]["binary_data_shape"] = shape3d(1, 6, 4, timepoints=3)
    binaries[0] = bytes(72)
    assert check_result(result, binaries, STUDY) == []


def test_label_values_are_found_across_large_masks():
    """Masks reach hundreds of MiB; the label check works in chunks and must not miss the last one."""
    content = bytearray((16 << 20) * 2 + 5)
    content[-1] = 7
    content[16 << 20] = 1
    result = {"protocol_version": "1.0", "parts": [
        {"label": "l", "binary_type": "numeric_label_mask",
         "binary_data_shape": {"timepoints": 1, "depth": 1, "width": len(content), "height": 1},
         "SeriesInstanceUID": "S1", "label_map": {"1": "a"}}]}
    assert check_result(result, [content]) == ["parts[0].label_map: mask values [7] have no entry in label_map"]
    content[-1] = 1
    assert check_result(result, [memoryview(content)]) == []


def test_helpers():
    assert mask_length({"timepoints": 2, "depth": 3, "width": 4, "height": 5}) == 120
    assert mask_length({"width": 4, "height": 5}) == 20
    assert is_dicom_file(DICOM_FILE) and not is_dicom_file(b"DICM" + bytes(200)) and not is_dicom_file(b"")
    data = [b"abc", b"", b"def"]
    assert sha256_hex(data) == hashlib.sha256(b"abcdef").hexdigest()
    line = hashes_line("a" * 64, "0" * 64)
    assert line == "a" * 64 + ":" + "0" * 64 and len(line) == 129
    assert check_hashes_line(line) == []
    for bad in ("a" * 64, "A" * 64 + ":" + "0" * 64, "a" * 63 + ":" + "0" * 64, "a" * 64 + ":" + "0" * 65, ""):
        problems = check_hashes_line(bad)
        assert len(problems) == 1 and "'<64 hex>:<64 hex>'" in problems[0], bad


def test_good_result_is_not_modified_by_the_check():
    result, binaries = good()
    before = copy.deepcopy(result)
    check_result(result, binaries, STUDY)
    assert result == before
