"""Property-based fuzzing (hypothesis) of arterys_http.protocol.check_result.

The checker judges what a model author's code returned (in the worker) and what a worker sent (in the
bridge): it must answer every input with a list of sentences, never with an exception, or a bad result
becomes a crash instead of a report. Inputs are arbitrary JSON values (anything json.loads can give) and
random damage to a valid rich result, which reaches the deep rules (shapes, label maps, palettes, boxes).
"""

from __future__ import annotations

import copy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from arterys_http.protocol import BINARY_TYPES, COORDINATE_TYPES, SHAPE_3D, check_hashes_line, check_result
from tests.test_protocol import DICOM_FILE, STUDY, good


def examples(count: int) -> int:
    """`count` examples under the "ci" profile, scaled with the loaded one (20x under "long")."""
    return max(1, count * settings.default.max_examples // 100)


# Words of the protocol and of the test study, so that random values often mean something.
WORDS = ["1.0", *BINARY_TYPES, *COORDINATE_TYPES, "anchorpoints", "hot", "1.1", "2.1", "S1", "S2", "0", "1", "2",
         "255", "256", "01", "1\n", ""]
KEYS = ["protocol_version", "parts", "palettes", "label", "binary_type", "binary_data_shape", *SHAPE_3D,
        "SeriesInstanceUID", "dicom_image", "SOPInstanceUID", "frame_number", "probability_threshold", "palette",
        "label_map", "dicomConformance", "recommended", "description", "compliant", "bounding_boxes_2d", "top_left",
        "bottom_right", "linear_measurements_2d", "coordinates_type", "start", "end", "series_ml_json", "type",
        "data", "threshold", "color", "1", "2", "hot"]
# JSON numbers and digit strings as long as json.loads and int() take (4300 digits): a product or int() of
# them is where Python's integer/string conversion limit can bite.
huge_ints = st.integers(min_value=10 ** 4290, max_value=10 ** 4300 - 1)
long_digits = st.integers(min_value=4290, max_value=4400).map(lambda n: "7" * n)

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2, 300), huge_ints, st.floats(), st.text(max_size=8),
    st.sampled_from(WORDS), long_digits,
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6), long_digits)
json_values = st.recursive(
    leaves, lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
binaries = st.lists(
    st.one_of(st.integers(-1, 300), st.binary(max_size=100), st.just(DICOM_FILE), st.integers(0, 100).map(bytes)),
    max_size=9,
)


def assert_sentences(problems) -> None:
    assert isinstance(problems, list)
    assert all(isinstance(problem, str) and problem for problem in problems), problems


@settings(max_examples=examples(300))
@given(result=json_values, sent=binaries, with_study=st.booleans())
def test_check_result_answers_any_json_value_with_sentences(result, sent, with_study):
    before = copy.deepcopy(result)
    problems = check_result(result, sent, STUDY if with_study else None)
    assert_sentences(problems)
    if not isinstance(result, dict) or result.get("protocol_version") != "1.0":
        assert problems  # anything but an object with the right version is reported
    assert [result] == [before]  # the check does not modify what it judges ([]: a NaN equals itself)


def paths(node, prefix=()):
    """Every place in a JSON tree: (container, key) pairs, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in list(items):
        yield node, key
        if isinstance(child, dict | list):
            yield from paths(child, (*prefix, key))


@st.composite
def damaged_results(draw):
    """The valid rich result of test_protocol.good() and its binaries after 1 to 4 random changes."""
    result, sent = good()
    for _ in range(draw(st.integers(1, 4))):
        places = list(paths(result))
        container, key = draw(st.sampled_from(places)) if places else (result, None)
        change = draw(st.sampled_from(["set", "set", "delete", "add", "binary"]))
        if change == "set" and key is not None:
            container[key] = draw(json_values)
        elif change == "delete" and key is not None:
            del container[key]
        elif change == "add" and isinstance(container, dict):
            container[draw(keys)] = draw(json_values)
        elif change == "add":
            container.insert(draw(st.integers(0, len(container))), draw(json_values))
        elif change == "binary" and sent:
            index = draw(st.integers(0, len(sent) - 1))
            sent[index] = draw(binaries.filter(bool))[0]
    if draw(st.booleans()):
        sent = [len(binary) if isinstance(binary, bytes) else binary for binary in sent]  # sizes only
    return result, sent


HEX = "0123456789abcdef"
hex64 = st.text(HEX, min_size=64, max_size=64)
hashes_texts = st.one_of(
    st.text(),
    st.builds(lambda left, sep, right, end: left + sep + right + end,
              hex64 | st.text(HEX + "ABCDEF", max_size=66), st.sampled_from([":", "", "::", "\n:"]),
              hex64 | st.text(HEX + "ABCDEF", max_size=66), st.sampled_from(["", "", "\n", " ", "\r\n"])),
)


@settings(max_examples=examples(200))
@given(text=hashes_texts)
@example(text="0" * 64 + ":" + "0" * 64 + "\n")  # found by the ci profile: '$' matched before a final LF
def test_check_hashes_line_accepts_exactly_two_hashes(text: str):
    problems = check_hashes_line(text)
    assert_sentences(problems)
    valid = len(text) == 129 and text[64] == ":" and set(text[:64] + text[65:]) <= set(HEX)
    assert (problems == []) == valid, problems


@settings(max_examples=examples(200))
@given(key=st.text(max_size=6) | st.builds(str.__add__, st.text("0123456789", min_size=1, max_size=3),
                                            st.sampled_from(["", "\n", " ", "x"])))
@example(key="0\n")  # found by the ci profile: '$' matched before a final LF
def test_label_map_keys_must_be_digit_strings(key: str):
    result, sent = good()
    result["parts"][3]["label_map"] = {"1": "core", "2": "rim", key: "edge"}
    problems = check_result(result, sent, STUDY)
    digits = key.isascii() and key.isdigit()
    assert any(f"key {key!r} must be a digit string" in problem for problem in problems) == (not digits), problems


def good_with(change) -> tuple:
    result, sent = good()
    change(result)
    return result, sent


@settings(max_examples=examples(300))
@given(case=damaged_results(), with_study=st.booleans())
# Found by `make fuzz`: int() of a label_map key of more than 4300 digits, and str() of the byte count
# of a shape whose product has more than 4300 digits, raised ValueError.
@example(case=good_with(lambda r: r["parts"][3]["label_map"].update({"7" * 4301: "huge"})), with_study=True)
@example(case=good_with(lambda r: r["parts"][0]["binary_data_shape"].update(timepoints=10 ** 4299)),
         with_study=False)
def test_check_result_answers_any_damaged_result_with_sentences(case, with_study):
    result, sent = case
    before = copy.deepcopy(result)
    assert_sentences(check_result(result, sent, STUDY if with_study else None))
    assert [result] == [before]


def test_huge_numbers_are_reported_not_raised():
    result, sent = good_with(lambda r: r["parts"][1]["binary_data_shape"].update(width=10 ** 4299, height=10))
    [problem] = check_result(result, sent)
    assert "needs 2**14284 or more bytes (one uint8 per voxel) but the binary has 15" in problem
    # A key with 5000 leading zeros still names mask value 1; one of 4301 digits names no byte value.
    result, sent = good_with(lambda r: r["parts"][3].update(label_map={"0" * 5000 + "1": "core", "2": "rim"}))
    assert check_result(result, sent, STUDY) == []
    result, sent = good_with(lambda r: r["parts"][3].update(label_map={"1" * 4301: "core", "2": "rim"}))
    assert check_result(result, sent, STUDY) == ["parts[3].label_map: mask values [1] have no entry in label_map"]
