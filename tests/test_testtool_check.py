"""testtool.answer + testtool.check on hand-made responses: no server, no files but the ones written.

Each test builds a multipart/related answer byte by byte, reads it the way the tool reads the network
(testtool.answer.read_answer, at several chunk sizes) and checks what the tool reports.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from arterys_http.protocol import ImageInfo, StudyIndex
from testtool.answer import read_answer
from testtool.check import check_answer

BOUNDARY = "answer-boundary"
CONTENT_TYPE = f"multipart/related; boundary={BOUNDARY}"
INPUT_HASH = hashlib.sha256(b"the request parts").hexdigest()
SOP, SERIES = "1.2.3.4", "1.2.3"
ROWS, COLS = 4, 5
STUDY = StudyIndex.of([ImageInfo(SOP, SERIES, ROWS, COLS)])
DICOM_BYTES = b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"


def mask_part(label: str = "lesion", width: int = COLS, height: int = ROWS) -> dict:
    return {"label": label, "binary_type": "probability_mask", "binary_data_shape": {"width": width, "height": height},
            "dicom_image": {"SOPInstanceUID": SOP}}


def result(*parts: dict) -> dict:
    return {"protocol_version": "1.0", "parts": list(parts)}


def body(parts: list[tuple[str | None, bytes]]) -> bytes:
    out = b""
    for content_type, data in parts:
        head = f"Content-Type: {content_type}\r\n" if content_type else ""
        out += f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def hashes(json_bytes: bytes, binaries: list[bytes], input_hash: str = INPUT_HASH) -> bytes:
    output = hashlib.sha256(json_bytes)
    for binary in binaries:
        output.update(binary)
    return f"{input_hash}:{output.hexdigest()}".encode()


def answer_parts(result_json: dict, binaries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A correct answer: JSON, binaries, hashes line."""
    json_bytes = json.dumps(result_json).encode()
    return [("application/json", json_bytes), *binaries,
            ("text/plain", hashes(json_bytes, [data for _, data in binaries]))]


def received(tmp_path, parts, content_type: str = CONTENT_TYPE, chunk: int = 1 << 20):
    data = body(parts)
    return read_answer(content_type, (data[i:i + chunk] for i in range(0, len(data), chunk)), tmp_path)


def check(tmp_path, parts, input_hash: str | None = INPUT_HASH, **kwargs) -> list[str]:
    return check_answer(received(tmp_path, parts, **kwargs), input_hash, STUDY)


MASK = bytes(range(ROWS * COLS))


# ------------------------------------------------------------------------------------------ valid answers


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
def test_a_valid_answer_has_no_violation_and_its_mask_is_written(tmp_path, chunk):
    parts = answer_parts(result(mask_part()), [("application/binary", MASK)])
    answer = received(tmp_path, parts, chunk=chunk)
    assert check_answer(answer, INPUT_HASH, STUDY) == []
    assert answer.complete
    assert (tmp_path / "output_masks_1.npy").read_bytes() == MASK
    assert [bytes(p.data) for p in answer.binary_parts] == [MASK]
    assert answer.hashes_text == parts[-1][1].decode()


def test_masks_and_dicom_outputs_get_their_own_numbering(tmp_path):
    declared = result(mask_part("a"), {"label": "sc", "binary_type": "dicom_secondary_capture"}, mask_part("b"))
    binaries = [("application/binary", MASK), ("application/dicom", DICOM_BYTES), ("application/binary", MASK[::-1])]
    answer = received(tmp_path, answer_parts(declared, binaries))
    assert check_answer(answer, INPUT_HASH, STUDY) == []
    assert [p.path.name for p in answer.binary_parts] == ["output_masks_1.npy", "sc_1.dcm", "output_masks_2.npy"]
    assert (tmp_path / "output_masks_2.npy").read_bytes() == MASK[::-1]
    assert (tmp_path / "sc_1.dcm").read_bytes() == DICOM_BYTES


def test_an_answer_without_binaries_is_json_then_hashes(tmp_path):
    declared = {"protocol_version": "1.0", "parts": [],
                "bounding_boxes_2d": [{"label": "x", "SOPInstanceUID": SOP, "top_left": [0, 0],
                                       "bottom_right": [2, 2]}]}
    assert check(tmp_path, answer_parts(declared, [])) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ content types


def test_a_response_that_is_not_multipart_is_reported(tmp_path):
    problems = check(tmp_path, [("application/json", b"{}")], content_type="application/json")
    assert any("must be multipart/related, got application/json" in p for p in problems)


def test_the_first_part_must_be_application_json(tmp_path):
    parts = answer_parts(result(), [])
    parts[0] = ("text/plain", parts[0][1])
    problems = check(tmp_path, parts)
    assert any(p.startswith("part 1 must be the result JSON") and "got text/plain" in p for p in problems)


def test_a_first_part_that_is_not_json_is_reported(tmp_path):
    problems = check(tmp_path, [("application/json", b"{not json"), ("text/plain", b"x")])
    assert any("part 1 is not valid JSON" in p for p in problems)


def test_binary_content_types_follow_binary_type(tmp_path):
    declared = result(mask_part(), {"label": "sc", "binary_type": "dicom_secondary_capture"})
    binaries = [("application/octet-stream", MASK), ("application/binary", DICOM_BYTES)]
    problems = check(tmp_path, answer_parts(declared, binaries))
    assert any("part 2 (the binary of parts[0], a probability_mask) has Content-Type application/octet-stream; "
               "expected application/binary" in p for p in problems)
    assert any("part 3 (the binary of parts[1], a dicom_secondary_capture) has Content-Type application/binary; "
               "expected application/dicom" in p for p in problems)
    assert len(problems) == 2, problems


# ------------------------------------------------------------------------------------------ hashes


def test_a_wrong_input_hash_is_caught_by_recomputing_it(tmp_path):
    parts = answer_parts(result(), [])
    other = hashlib.sha256(b"something else").hexdigest()
    problems = check(tmp_path, parts, input_hash=other)
    assert len(problems) == 1
    assert f"the input hash is {INPUT_HASH} but the parts this tool sent hash to {other}" in problems[0]


def test_without_a_known_input_hash_only_the_output_hash_is_recomputed(tmp_path):
    assert check(tmp_path, answer_parts(result(), []), input_hash=None) == []


def test_a_wrong_output_hash_is_caught_by_recomputing_it(tmp_path):
    parts = answer_parts(result(mask_part()), [("application/binary", MASK)])
    parts[1] = ("application/binary", MASK[::-1])  # the binary changed after the server hashed it
    problems = check(tmp_path, parts)
    assert len(problems) == 1
    assert "the output hash is" in problems[0] and "1 binary part(s) received hash to" in problems[0]


def test_the_output_hash_covers_the_json_bytes_exactly_as_received(tmp_path):
    parts = answer_parts(result(), [])
    parts[0] = ("application/json", json.dumps(result(), indent=1).encode())  # same JSON, other bytes
    problems = check(tmp_path, parts)
    assert len(problems) == 1 and "the output hash is" in problems[0]


def test_a_malformed_hashes_line_is_reported(tmp_path):
    parts = answer_parts(result(), [])
    parts[-1] = ("text/plain", b"abc:def")
    problems = check(tmp_path, parts)
    assert problems == ["hashes part must be '<64 hex>:<64 hex>' (129 characters), got 7 characters: 'abc:def'"]


def test_a_missing_hashes_part_is_reported_and_its_binary_still_written(tmp_path):
    parts = answer_parts(result(mask_part()), [("application/binary", MASK)])[:-1]
    answer = received(tmp_path, parts)
    problems = check_answer(answer, INPUT_HASH, STUDY)
    assert len(problems) == 1
    assert "the last part must be the text/plain hashes line" in problems[0]
    assert "part 2 is application/binary" in problems[0]
    assert (tmp_path / "output_masks_1.npy").read_bytes() == MASK


# ------------------------------------------------------------------------------------------ parts vs binaries


def test_a_part_without_its_binary_is_reported(tmp_path):
    declared = result(mask_part("a"), mask_part("b"))
    problems = check(tmp_path, answer_parts(declared, [("application/binary", MASK)]))
    assert any("2 entries declared but 1 binaries returned" in p for p in problems), problems


def test_a_binary_without_its_part_is_reported(tmp_path):
    binaries = [("application/binary", MASK), ("application/binary", MASK)]
    problems = check(tmp_path, answer_parts(result(mask_part()), binaries))
    assert any("1 entries declared but 2 binaries returned" in p for p in problems), problems


def test_a_text_plain_binary_in_the_middle_is_written_and_counted_as_a_binary(tmp_path):
    declared = result(mask_part("a"), mask_part("b"))
    binaries = [("text/plain", MASK), ("application/binary", MASK)]
    answer = received(tmp_path, answer_parts(declared, binaries))
    assert [p.path.name for p in answer.binary_parts] == ["output_masks_1.npy", "output_masks_2.npy"]
    problems = check_answer(answer, INPUT_HASH, STUDY)
    assert len(problems) == 1 and "has Content-Type text/plain; expected application/binary" in problems[0]


def test_a_mask_whose_length_does_not_match_its_shape_is_reported(tmp_path):
    problems = check(tmp_path, answer_parts(result(mask_part()), [("application/binary", MASK[:-1])]))
    assert len(problems) == 1
    assert "needs 20 bytes (one uint8 per voxel) but the binary has 19" in problems[0]


def test_a_mask_with_width_and_height_swapped_is_reported(tmp_path):
    swapped = mask_part(width=ROWS, height=COLS)  # same length, wrong shape: the original tool drew it anyway
    problems = check(tmp_path, answer_parts(result(swapped), [("application/binary", MASK)]))
    assert len(problems) == 1
    assert "width x height is 4 x 5 but the image is 5 x 4" in problems[0]


# ------------------------------------------------------------------------------------------ broken bodies


def test_a_truncated_body_is_reported_and_what_arrived_is_kept(tmp_path):
    data = body(answer_parts(result(mask_part()), [("application/binary", MASK)]))
    cut = data.index(MASK) + 7
    answer = read_answer(CONTENT_TYPE, [data[:cut]], tmp_path)
    assert not answer.complete
    assert (tmp_path / "output_masks_1.npy").read_bytes() == MASK[:7]
    problems = check_answer(answer, INPUT_HASH, STUDY)
    assert any("the response body is incomplete" in p and "truncated inside part 1" in p for p in problems)


def test_a_body_with_another_boundary_is_reported(tmp_path):
    data = body(answer_parts(result(), []))
    answer = read_answer("multipart/related; boundary=other", [data], tmp_path)
    problems = check_answer(answer, INPUT_HASH, STUDY)
    assert any("the boundary in Content-Type does not match the body" in p for p in problems), problems


def test_an_empty_multipart_body_is_reported(tmp_path):
    problems = check(tmp_path, [])
    assert any("the response has no parts" in p for p in problems), problems
