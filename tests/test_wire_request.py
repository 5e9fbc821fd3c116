"""arterys_http.request writes what arterys_http.multipart reads back, with the declared length and hash."""

from __future__ import annotations

import hashlib

import pytest

from arterys_http import media
from arterys_http.multipart import MultipartParser, PartData, PartEnd, PartStart, boundary_from_content_type
from arterys_http.request import MultipartBody, OutgoingPart, StudyChanged, file_part, json_part


def parse(body: MultipartBody, chunk: int = 7) -> list[tuple[dict, bytes]]:
    parser = MultipartParser(boundary_from_content_type(body.content_type))
    data = b"".join(body)
    parts, current = [], None
    for start in range(0, len(data), chunk):
        for event in parser.feed(data[start:start + chunk]):
            if isinstance(event, PartStart):
                current = (event.headers, bytearray())
            elif isinstance(event, PartData):
                current[1].extend(event.data)
            elif isinstance(event, PartEnd):
                parts.append((current[0], bytes(current[1])))
    parser.close()
    return parts


def test_a_body_parses_back_to_its_parts_with_its_length_and_hash(tmp_path):
    dicom = tmp_path / "a b\"c.dcm"
    dicom.write_bytes(b"\r\n--not-a-boundary\r\n" * 50_000)
    parts = [json_part({"x": 1}, "text/json"), file_part(dicom, "1", media.DICOM),
             OutgoingPart("", "", media.ATTACHMENT, 3, data=b"abc")]
    body = MultipartBody(parts)
    assert len(b"".join(body)) == len(body)
    read = parse(body)
    assert [content for _, content in read] == [b'{"x": 1}', dicom.read_bytes(), b"abc"]
    assert read[1][0]["content-disposition"] == 'form-data; name="1"; filename="a b\\"c.dcm"'
    assert "content-disposition" not in read[2][0]  # a part without a name: only its Content-Type
    assert body.input_hash == hashlib.sha256(b'{"x": 1}' + dicom.read_bytes() + b"abc").hexdigest()


def test_a_file_that_changes_while_it_is_sent_is_an_error(tmp_path):
    path = tmp_path / "f.dcm"
    path.write_bytes(b"x" * 100)
    body = MultipartBody([file_part(path, "1", media.DICOM)])
    path.write_bytes(b"x" * 10)
    with pytest.raises(StudyChanged):
        b"".join(body)
