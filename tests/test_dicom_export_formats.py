"""`output_formats`: the request's "output_formats" list, else the worker's default; anything else is a 400."""

from __future__ import annotations

import pytest

from worker.sdk.refusals import InvalidInput
from worker.serving.dicom_export import UnknownOutputFormat, output_formats, parse_output_formats_flag


def test_the_default_is_the_workers_default():
    assert output_formats({}) == ["arterys"]
    assert output_formats({"inference_command": "x"}, default=["dicom"]) == ["dicom"]
    assert output_formats({"output_formats": None}, default=("arterys", "dicom")) == ["arterys", "dicom"]


@pytest.mark.parametrize("asked, formats", [
    (["arterys", "dicom"], ["arterys", "dicom"]),
    (["dicom"], ["dicom"]),
    (["dicom", "arterys", "dicom"], ["dicom", "arterys"]),  # a repeat asks for nothing more
])
def test_the_request_chooses(asked, formats):
    assert output_formats({"output_formats": asked}, default=["arterys"]) == formats


@pytest.mark.parametrize("asked, message", [
    (["arterys", "png"], r"unknown format 'png'; known: \"arterys\", \"dicom\""),
    (["DICOM"], "unknown format 'DICOM'"),
    ("dicom", r"must be a non-empty list of formats"),
    ([], "must be a non-empty list"),
    ([1], "unknown format 1"),
])
def test_an_unknown_format_is_invalid_input_naming_the_known_ones(asked, message):
    with pytest.raises(UnknownOutputFormat, match=message) as caught:
        output_formats({"output_formats": asked})
    assert isinstance(caught.value, InvalidInput) and isinstance(caught.value, ValueError)  # 400, and a ValueError
    assert 'the request\'s "output_formats"' in str(caught.value)


def test_the_flag_is_comma_separated():
    assert parse_output_formats_flag("arterys,dicom") == ["arterys", "dicom"]
    assert parse_output_formats_flag(" dicom ") == ["dicom"]
    with pytest.raises(ValueError, match="--output-formats names an unknown format 'dcm'"):
        parse_output_formats_flag("arterys,dcm")
    with pytest.raises(ValueError, match="non-empty"):
        parse_output_formats_flag("")


def test_a_bad_default_is_reported_as_the_workers():
    with pytest.raises(ValueError, match="the worker's --output-formats"):
        output_formats({}, default=["xml"])
