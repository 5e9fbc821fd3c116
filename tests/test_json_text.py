"""arterys_http.json_text: the one reader of a client's JSON object, for the bridge and the worker."""

from __future__ import annotations

import pytest

from arterys_http.json_text import JsonProblem, load_json_object


def test_an_object_is_read_and_an_empty_body_is_an_empty_object():
    assert load_json_object(b'{"inference_command": "x", "n": [1, 2.5]}', "it") == {
        "inference_command": "x", "n": [1, 2.5]}
    assert load_json_object(b"", "it") == {} and load_json_object(b" \r\n", "it") == {}


@pytest.mark.parametrize(("raw", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, "the JSON is nested too deeply to be read"),
    (b'{"n": ' + b"7" * 5000 + b"}", "the JSON is not valid JSON: it holds an integer of more than 4,300 digits"),
    (b'{"t": NaN}', "the JSON is not valid JSON: NaN is not a JSON value"),
    (b'{"t": -Infinity}', "the JSON is not valid JSON: -Infinity is not a JSON value"),
    (b'{"a": 1', "the JSON is not valid JSON: Expecting"),
    (b'{"a": "\xff"}', "the JSON is not UTF-8 text"),
    (b"[1, 2]", "the JSON must be a JSON object, got an array"),
    (b'"text"', "the JSON must be a JSON object, got a string"),
    (b"null", "the JSON must be a JSON object, got null"),
])
def test_what_is_not_a_json_object_is_said_plainly(raw, message):
    with pytest.raises(JsonProblem) as caught:
        load_json_object(raw, "the JSON")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "sys." not in str(caught.value)  # no advice meant for Python programmers
