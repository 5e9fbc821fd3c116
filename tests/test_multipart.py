"""Tests for arterys_http.multipart, the sans-IO multipart parser.

Every body is parsed at many chunk sizes (the ``chunk_size`` fixture): a parser bug around a boundary
split across two reads shows up only for some splits.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass

import pytest
from requests_toolbelt import MultipartEncoder
from requests_toolbelt.multipart.decoder import MultipartDecoder

from arterys_http.multipart import (
    MAX_PREAMBLE_SIZE,
    Epilogue,
    LimitExceeded,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_content_type,
)

CHUNK_SIZES = [1, 2, 3, 7, 64, 1000, None]  # None: the whole body in one feed()
B = "BOUNDARY"
BB = B.encode()


@pytest.fixture(params=CHUNK_SIZES, ids=lambda size: f"chunk{size or 'All'}")
def chunk_size(request):
    return request.param


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


@dataclass
class Part:
    start: PartStart
    data: bytes


def split(body: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [body]
    return [body[i:i + size] for i in range(0, len(body), size)]


def assemble(events: list) -> list[Part]:
    """Turn an event stream into parts, checking that the stream itself is well formed."""
    parts: list[Part] = []
    current: list[bytes] | None = None
    assert isinstance(events[-1], Epilogue), events[-1:]
    for event in events[:-1]:
        assert not isinstance(event, Epilogue)
        if isinstance(event, PartStart):
            assert current is None and event.index == len(parts)
            parts.append(Part(event, b""))
            current = []
        elif isinstance(event, PartData):
            assert current is not None and isinstance(event.data, memoryview) and event.data.readonly
            assert len(event.data) >= 1
            current.append(event.data)
        else:
            assert isinstance(event, PartEnd) and current is not None
            parts[-1].data = b"".join(current)
            assert event.index == len(parts) - 1 and event.size == len(parts[-1].data)
            current = None
    assert current is None
    return parts


def parse(body: bytes, size: int | None, boundary: str = B, chunks: list[bytes] | None = None, **limits):
    parser = MultipartParser(boundary, **limits)
    events: list = []
    for piece in chunks if chunks is not None else split(body, size):
        events += parser.feed(piece)
    events += parser.close()
    return assemble(events)


def parse_error(body: bytes, size: int | None, boundary: str = B, **limits) -> MultipartError:
    with pytest.raises(MultipartError) as info:
        parse(body, size, boundary, **limits)
    return info.value


def make_body(parts: list[tuple[bytes, bytes]], boundary: bytes = BB, preamble: bytes = b"",
              epilogue: bytes = b"\r\n", eol: bytes = b"\r\n") -> bytes:
    """A body from (raw header block, data) pairs; the header block includes its lines' endings."""
    out = [preamble + (eol if preamble else b"")]
    for i, (headers, data) in enumerate(parts):
        out.append((eol if i else b"") + b"--" + boundary + eol + headers + eol + data)
    out.append(eol + b"--" + boundary + b"--" + epilogue)
    return b"".join(out)


def datas(parts: list[Part]) -> list[bytes]:
    return [part.data for part in parts]


# --------------------------------------------------------------------------------------------------
# Content-Type helpers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('Multipart/Related ; type="application/json";  boundary="abc"',
         ("multipart/related", {"type": "application/json", "boundary": "abc"})),
        ("multipart/related; boundary=abc", ("multipart/related", {"boundary": "abc"})),
        ("MULTIPART/RELATED;BOUNDARY=AbC;CHARSET=utf-8",
         ("multipart/related", {"boundary": "AbC", "charset": "utf-8"})),
        ('multipart/related; boundary="a \\"q\\" b"', ("multipart/related", {"boundary": 'a "q" b'})),
        ("  application/json  ", ("application/json", {})),
        ("multipart/form-data; boundary=----=_Part_1;",
         ("multipart/form-data", {"boundary": "----=_Part_1"})),
        ('multipart/related; type="application/dicom"; start="<x@y>"; boundary="b:1"',
         ("multipart/related", {"type": "application/dicom", "start": "<x@y>", "boundary": "b:1"})),
    ],
)
def test_parse_content_type(value, expected):
    assert parse_content_type(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "   ", "multipart", "multipart/", "/related", "multipart/related boundary=x",
     "multipart/related; boundary", 'multipart/related; boundary="abc', "multipart/related; boundary=a b",
     "multipart/related; boundary=a; boundary=b", "multi part/related"],
)
def test_parse_content_type_rejects_garbage(value):
    with pytest.raises(MultipartError):
        parse_content_type(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('multipart/related; boundary="abc"', "abc"),
        ("multipart/related; boundary=abc", "abc"),
        ('Multipart/Related;  Type="application/json" ;  Boundary = "a-b_c" ; charset=UTF-8', "a-b_c"),
        ('multipart/related; boundary="with space"', "with space"),
        ("multipart/form-data; boundary=" + "x" * 70, "x" * 70),
        ("multipart/related; boundary=\"'()+_,-./:=?\"", "'()+_,-./:=?"),
    ],
)
def test_boundary_from_content_type(value, expected):
    assert boundary_from_content_type(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("multipart/related", "no boundary"),
        ("multipart/related; type=application/json", "no boundary"),
        ('multipart/related; boundary=""', "empty"),
        ("multipart/related; boundary=", "empty"),
        ("multipart/related; boundary=" + "x" * 71, "at most 70"),
        ("multipart/related; boundary=abc@def", "characters"),
        ('multipart/related; boundary="abc "', "characters"),
        ('multipart/related; boundary="caf\u00e9"', "characters"),
        ("text/plain; boundary", "invalid parameters"),
    ],
)
def test_boundary_from_content_type_errors(value, message):
    with pytest.raises(MultipartError, match=message):
        boundary_from_content_type(value)


@pytest.mark.parametrize("boundary", ["", "x" * 71, "a\r\nb", "a\nb", "trailing "])
def test_parser_rejects_invalid_boundary(boundary):
    with pytest.raises(MultipartError):
        MultipartParser(boundary)


# --------------------------------------------------------------------------------------------------
# Well-formed bodies
# --------------------------------------------------------------------------------------------------


def test_part_with_disposition_and_type(chunk_size):
    headers = (b'Content-Disposition: form-data; name="request_json"; filename="request"\r\n'
               b"Content-Type: text/json\r\n")
    body = make_body([(headers, b'{"a": 1}')])
    [part] = parse(body, chunk_size)
    assert part.data == b'{"a": 1}'
    assert part.start.headers == {
        "content-disposition": 'form-data; name="request_json"; filename="request"',
        "content-type": "text/json",
    }
    assert (part.start.content_type, part.start.name, part.start.filename) == ("text/json", "request_json",
                                                                                  "request")


def test_parts_with_content_type_only(chunk_size):
    body = make_body([
        (b"Content-Type: application/json; charset=utf-8\r\n", b"{}"),
        (b"Content-Type: Application/DICOM\r\n", b"DICM" * 50),
    ])
    parts = parse(body, chunk_size)
    assert [p.start.content_type for p in parts] == ["application/json", "application/dicom"]
    assert [(p.start.name, p.start.filename) for p in parts] == [("", ""), ("", "")]
    assert datas(parts) == [b"{}", b"DICM" * 50]


def test_part_without_headers(chunk_size):
    body = make_body([(b"", b"no headers here"), (b"Content-Type: a/b\r\n", b"x")])
    parts = parse(body, chunk_size)
    assert parts[0].start.headers == {} and parts[0].start.content_type == ""
    assert datas(parts) == [b"no headers here", b"x"]


def test_empty_parts(chunk_size):
    body = make_body([(b"", b""), (b"Content-Type: a/b\r\n", b""), (b"", b"x"), (b"", b"")])
    assert datas(parse(body, chunk_size)) == [b"", b"", b"x", b""]


def test_delimiter_right_after_headers_is_an_empty_part(chunk_size):
    # RFC 2046: a body part may be headers only; the delimiter's CRLF then follows the header block.
    body = b"--B\r\n\r\n--B\r\nContent-Type: a/b\r\n\r\n--B--"
    parts = parse(body, chunk_size, boundary="B")
    assert datas(parts) == [b"", b""]
    assert parts[1].start.content_type == "a/b"


@pytest.mark.parametrize(
    "data",
    [
        b"\r\n--BOUNDAR",  # a partial delimiter at the end of the data
        b"x\r\n--BOUNDAR\r\n--BOUNDA\r\n--B\r\n-\r\n",
        b"\r\n--BOUNDARYXYZ\r\nmore",  # a longer boundary is not ours
        b"\r\n--BOUNDARY-x",  # one dash is not a close delimiter
        b"\r\n--BOUNDARY \t garbage\r\n",  # padding followed by garbage: not a delimiter line
        b"\r\n--BOUNDARY\rX",  # CR not followed by LF
        b"--BOUNDARY in the middle x--BOUNDARY\r\n y--BOUNDARY--",  # boundary without the leading CRLF
        b"\r--BOUNDARY\r\n",
        b"ends with CR\r",
        b"\r",
        b"\r\r\r",
        b"\r\n",
        b"\r\n\r\n",
        b"--",
        b"-",
        b"\r\n--",
        b"x\r\n--BOUNDARY" + b" " * 1100 + b"\r\n",  # more padding than any real delimiter line has
    ],
)
def test_data_that_looks_like_a_delimiter(data, chunk_size):
    body = make_body([(b"Content-Type: a/b\r\n", data), (b"", b"second")])
    assert datas(parse(body, chunk_size)) == [data, b"second"]


def test_data_starting_like_a_delimiter(chunk_size):
    body = make_body([(b"", b"--BOUNDARYX"), (b"Content-Type: a/b\r\n", b"--BOUNDARY-")])
    assert datas(parse(body, chunk_size)) == [b"--BOUNDARYX", b"--BOUNDARY-"]


def test_binary_data_with_all_byte_values(chunk_size):
    data = bytes(range(256)) * 3 + bytes(reversed(range(256)))
    body = make_body([(b"Content-Type: application/octet-stream\r\n", data), (b"", data[::2])])
    assert datas(parse(body, chunk_size)) == [data, data[::2]]


def test_preamble_and_epilogue_are_ignored(chunk_size):
    preamble = b"This is a preamble.\r\n--BOUNDARYnot\r\n--BOUNDAR\r\n-- BOUNDARY\r\n"
    epilogue = b"\r\nepilogue --BOUNDARY\r\nContent-Type: a/b\r\n\r\nignored\r\n--BOUNDARY--\r\n"
    body = make_body([(b"", b"one"), (b"", b"two")], preamble=preamble, epilogue=epilogue)
    assert datas(parse(body, chunk_size)) == [b"one", b"two"]


def test_preamble_without_line_break_before_first_delimiter_is_ignored(chunk_size):
    body = b"junk--BOUNDARY\r\n\r\nnot a part\r\n--BOUNDARY\r\n\r\nreal\r\n--BOUNDARY--"
    assert datas(parse(body, chunk_size)) == [b"real"]


def test_first_delimiter_at_body_start_or_after_crlf(chunk_size):
    assert datas(parse(b"--BOUNDARY\r\n\r\nx\r\n--BOUNDARY--", chunk_size)) == [b"x"]
    assert datas(parse(b"\r\n--BOUNDARY\r\n\r\nx\r\n--BOUNDARY--", chunk_size)) == [b"x"]


def test_close_delimiter_without_trailing_crlf_or_with_padding(chunk_size):
    assert datas(parse(b"--BOUNDARY\r\n\r\nx\r\n--BOUNDARY--", chunk_size)) == [b"x"]
    assert datas(parse(b"--BOUNDARY\r\n\r\nx\r\n--BOUNDARY--  \r\n", chunk_size)) == [b"x"]


def test_transport_padding_after_delimiters(chunk_size):
    body = b"--BOUNDARY \t \r\nContent-Type: a/b\r\n\r\none\r\n--BOUNDARY\t\r\n\r\ntwo\r\n--BOUNDARY--"
    parts = parse(body, chunk_size)
    assert datas(parts) == [b"one", b"two"]
    assert parts[0].start.content_type == "a/b"


def test_lf_only_line_endings(chunk_size):
    body = make_body([(b"Content-Type: text/json\n", b'{"x": "y"}\r\n'), (b"", b"\x00\r\x01")], eol=b"\n")
    parts = parse(body, chunk_size)
    assert datas(parts) == [b'{"x": "y"}\r\n', b"\x00\r\x01"]
    assert parts[0].start.content_type == "text/json"


def test_mixed_line_endings(chunk_size):
    body = b"--BOUNDARY\nContent-Type: a/b\r\nX-Other: 1\n\r\ndata\n--BOUNDARY\r\n\nsecond\r\n--BOUNDARY--\n"
    parts = parse(body, chunk_size)
    assert datas(parts) == [b"data", b"second"]
    assert parts[0].start.headers == {"content-type": "a/b", "x-other": "1"}


def test_headers_case_folding_and_duplicates(chunk_size):
    headers = (b"CONTENT-TYPE:   Application/JSON  \r\n"
               b"X-Long: first\r\n  second\r\n\tthird\r\n"
               b"x-dup: a\r\nX-Dup: b\r\n"
               b"X-Empty:\r\n")
    [part] = parse(make_body([(headers, b"{}")]), chunk_size)
    assert part.start.headers == {"content-type": "Application/JSON", "x-long": "first second third",
                                  "x-dup": "a, b", "x-empty": ""}
    assert part.start.content_type == "application/json"


@pytest.mark.parametrize(
    ("disposition", "name", "filename"),
    [
        (b'form-data; name="1"; filename="lic.txt"', "1", "lic.txt"),
        (b"form-data; name=dicom; filename=a.dcm", "dicom", "a.dcm"),
        (b'Form-Data; Name="x"', "x", ""),
        (b"attachment; filename=report.pdf", "", "report.pdf"),
        (b'form-data; name="f"; filename="a \\"q\\".dcm"', "f", 'a "q".dcm'),
        ("form-data; name=\"f\"; filename=\"caf\u00e9.dcm\"".encode(), "f", "caf\u00e9.dcm"),
        (b"attachment; filename=\"fallback.txt\"; filename*=UTF-8''%e2%82%ac%20rates.txt", "",
         "\u20ac rates.txt"),
        (b"attachment; filename*=bogus-charset''x.txt; filename=plain.txt", "", "plain.txt"),
        (b'form-data; name="unterminated', "", ""),  # garbage here is tolerated: both fields are optional
    ],
)
def test_content_disposition(disposition, name, filename, chunk_size):
    [part] = parse(make_body([(b"Content-Disposition: " + disposition + b"\r\n", b"x")]), chunk_size)
    assert (part.start.name, part.start.filename) == (name, filename)


def test_body_with_no_parts_is_accepted():
    # Valid syntax (a close delimiter only); whether an empty request makes sense is the caller's call.
    assert parse(b"--BOUNDARY--\r\n", None) == []


def test_boundary_with_special_characters(chunk_size):
    boundary = "----=_Part_0 (x)+,./:?'"
    body = make_body([(b"", b"a"), (b"", b"--" + boundary.encode()[:-1])], boundary=boundary.encode())
    assert datas(parse(body, chunk_size, boundary=boundary)) == [b"a", b"--" + boundary.encode()[:-1]]


def test_feed_accepts_bytearray_and_memoryview():
    body = make_body([(b"", b"abc")])
    parser = MultipartParser(B)
    events = parser.feed(bytearray(body[:10])) + parser.feed(memoryview(body)[10:]) + parser.close()
    assert datas(assemble(events)) == [b"abc"]


def test_empty_feeds_are_harmless():
    parser = MultipartParser(B)
    events = parser.feed(b"") + parser.feed(make_body([(b"", b"abc")])) + parser.feed(b"") + parser.close()
    assert datas(assemble(events)) == [b"abc"]


# --------------------------------------------------------------------------------------------------
# Real clients: requests_toolbelt, as the original Arterys test tool uses it
# --------------------------------------------------------------------------------------------------


def fake_dicom(size: int = 5000) -> bytes:
    rng = random.Random(7)
    return b"\x00" * 128 + b"DICM" + bytes(range(256)) + rng.randbytes(size)


def test_requests_toolbelt_encoder_body(chunk_size):
    dicom_bytes = fake_dicom()
    fields = [
        ("request_json", ("request", json.dumps({"inference_command": "x"}).encode(), "text/json")),
        ("1", ("lic.txt", b"licence", "application/octet-stream")),
        ("2", ("a.dcm", dicom_bytes, "application/dicom")),
    ]
    me = MultipartEncoder(fields=fields)
    body = me.to_string()
    boundary = me.content_type.split("boundary=")[1]
    # The tool sends the header in this form.
    content_type = f'multipart/related; boundary="{boundary}"'
    assert boundary_from_content_type(content_type) == boundary

    parts = parse(body, chunk_size, boundary=boundary_from_content_type(content_type))

    assert datas(parts) == [b'{"inference_command": "x"}', b"licence", dicom_bytes]
    assert [(p.start.name, p.start.filename, p.start.content_type) for p in parts] == [
        ("request_json", "request", "text/json"),
        ("1", "lic.txt", "application/octet-stream"),
        ("2", "a.dcm", "application/dicom"),
    ]
    reference = MultipartDecoder(body, content_type).parts
    assert datas(parts) == [p.content for p in reference]
    for ours, theirs in zip(parts, reference, strict=True):
        assert ours.start.headers == {k.decode().lower(): v.decode() for k, v in theirs.headers.items()}


def test_requests_toolbelt_many_random_files():
    rng = random.Random(11)
    files = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(20)]
    me = MultipartEncoder(fields=[(str(i), (f"{i}.dcm", data, "application/dicom")) for i, data in
                                  enumerate(files)])
    body = me.to_string()
    boundary = boundary_from_content_type(me.content_type)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(body)), 40))
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert datas(parse(body, None, boundary=boundary, chunks=chunks)) == files


# --------------------------------------------------------------------------------------------------
# Randomized round trip
# --------------------------------------------------------------------------------------------------

BOUNDARY_CHARS = "0123456789abcdefXYZ'()+_,-./:=?"


def random_data(rng: random.Random, boundary: bytes) -> bytes:
    """Random bytes mixed with the pieces that confuse parsers, but never a real delimiter line."""
    pieces = [b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", b"\n--", b" ", b"\t"]
    # A line starting with --boundary and then a line break, padding or "-" would really end the part
    # (RFC 2046 forbids it in part data); "\n" and "\r\n" stand for what surrounds the data in a body.
    forbidden = re.compile(rb"\n--" + re.escape(boundary) + rb"[\r\n \t-]")
    while True:
        out = []
        for _ in range(rng.randrange(0, 12)):
            roll = rng.random()
            if roll < 0.3:
                out.append(rng.randbytes(rng.randrange(0, 200)))
            elif roll < 0.6:
                out.append(rng.choice(pieces))
            else:  # a fragment of the delimiter, sometimes the whole of it followed by a wrong byte
                prefix = (b"\r\n--" + boundary)[: rng.randrange(1, len(boundary) + 5)]
                out.append(prefix + (rng.choice([b"X", b"-x", b"\rX"]) if prefix.endswith(boundary) else b""))
        data = b"".join(out)
        if not forbidden.search(b"\n" + data + b"\r\n"):
            return data


def random_headers(rng: random.Random) -> tuple[bytes, dict[str, str]]:
    choice = rng.randrange(4)
    headers: dict[str, str] = {}
    if choice in (1, 3):
        headers["content-type"] = rng.choice(["application/dicom", "text/json", "application/octet-stream"])
    if choice in (2, 3):
        headers["content-disposition"] = f'form-data; name="{rng.randrange(99)}"; filename="f.dcm"'
    names = {"content-type": "Content-Type", "content-disposition": "Content-Disposition"}
    raw = b"".join(f"{names[k]}: {v}\r\n".encode() for k, v in headers.items())
    return raw, headers


def random_chunks(rng: random.Random, body: bytes) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(body):
        size = rng.choice([1, 1, 2, 3, rng.randrange(1, 50), rng.randrange(1, 5000)])
        chunks.append(body[pos:pos + size])
        pos += size
    return chunks


def test_random_round_trip():
    rng = random.Random(20240601)
    for _ in range(400):
        boundary = "".join(rng.choice(BOUNDARY_CHARS) for _ in range(rng.randrange(1, 71)))
        bb = boundary.encode()
        parts = [(random_headers(rng), random_data(rng, bb)) for _ in range(rng.randrange(1, 6))]
        preamble = random_data(rng, bb) if rng.random() < 0.3 else b""
        epilogue = rng.choice([b"", b"\r\n", b"\r\n" + rng.randbytes(50)])
        body = make_body([(raw, data) for (raw, _), data in parts], boundary=bb, preamble=preamble,
                         epilogue=epilogue)
        parsed = parse(body, None, boundary=boundary, chunks=random_chunks(rng, body))
        assert datas(parsed) == [data for _, data in parts]
        assert [p.start.headers for p in parsed] == [headers for (_, headers), _ in parts]


# --------------------------------------------------------------------------------------------------
# Streaming, memory and speed
# --------------------------------------------------------------------------------------------------


def test_data_is_emitted_as_it_arrives():
    parser = MultipartParser(B)
    events = parser.feed(b"--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\n")
    assert [type(e) for e in events] == [PartStart]
    sent = 0
    received = 0
    for i in range(100):
        chunk = bytes([i % 256]) * 999 + b"\r\n--BOUN"[: i % 9]
        sent += len(chunk)
        received += sum(len(e.data) for e in parser.feed(chunk))
        # Only what could be the start of "\r\n--BOUNDARY" is held back.
        assert sent - received <= len(b"\r\n--BOUNDARY")
        assert parser.buffered_bytes == sent - received


def test_memory_stays_bounded_for_a_large_part():
    near_miss = b"x" * 1021 + b"\r\n--BOUNDAR"
    chunk = (near_miss * ((1 << 20) // len(near_miss) + 1))[: 1 << 20]  # 1 MiB, ending mid near-miss
    parser = MultipartParser(B)
    parser.feed(b"--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\n")
    digest, size, peak = hashlib.sha256(), 0, 0
    for _ in range(50):
        for event in parser.feed(chunk):
            digest.update(event.data)
            size += len(event.data)
        peak = max(peak, parser.buffered_bytes)
    events = parser.feed(b"\r\n--BOUNDARY--\r\n") + parser.close()
    for event in events:
        if isinstance(event, PartData):
            digest.update(event.data)
            size += len(event.data)
    assert peak <= 2 << 20
    assert size == 50 << 20
    assert digest.digest() == hashlib.sha256(chunk * 50).digest()
    assert isinstance(events[-1], Epilogue)


def test_large_body_streams_through_in_chunk_sized_events():
    # 256 MiB in 1 MiB chunks: every chunk comes out as one event, nothing accumulates.
    # (Throughput is measured in benchmarks/bench_multipart.py, not asserted here.)
    chunk = random.Random(3).randbytes(1 << 20)
    parser = MultipartParser(B)
    parser.feed(b"--BOUNDARY\r\n\r\n")
    size = 0
    for _ in range(256):
        events = parser.feed(chunk)
        assert len(events) <= 2
        size += sum(len(e.data) for e in events)
        assert parser.buffered_bytes <= len(chunk)
    size += sum(len(e.data) for e in parser.feed(b"\r\n--BOUNDARY--") if isinstance(e, PartData))
    parser.close()
    assert size == 256 << 20


def test_data_full_of_near_miss_delimiters_is_not_fragmented():
    near_misses = b"\r\n--BOUNDARYX" * ((1 << 20) // 13)
    parser = MultipartParser(B)
    parser.feed(b"--BOUNDARY\r\n\r\n")
    size = 0
    for _ in range(16):
        events = parser.feed(near_misses)
        assert len(events) == 1  # one PartData per chunk, not one per near miss
        size += len(events[0].data)
    tail = parser.feed(b"\r\n--BOUNDARY--")
    assert size + sum(len(e.data) for e in tail if isinstance(e, PartData)) == 16 * len(near_misses)


# --------------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------------


def test_max_body_size(chunk_size):
    body = make_body([(b"", b"x" * 100)], epilogue=b"\r\nepilogue")
    assert datas(parse(body, chunk_size, max_body_size=len(body))) == [b"x" * 100]
    error = parse_error(body, chunk_size, max_body_size=len(body) - 1)
    assert isinstance(error, LimitExceeded)
    assert str(error).startswith(f"request body exceeds {len(body) - 1} bytes")


def test_epilogue_counts_against_max_body_size():
    body = make_body([(b"", b"x")])
    parser = MultipartParser(B, max_body_size=len(body) + 5)
    parser.feed(body)
    parser.feed(b"12345")
    with pytest.raises(LimitExceeded, match="exceeds"):
        parser.feed(b"6")


def test_max_parts(chunk_size):
    body = make_body([(b"", b"a"), (b"", b"b"), (b"", b"c")])
    assert len(parse(body, chunk_size, max_parts=3)) == 3
    error = parse_error(body, chunk_size, max_parts=2)
    assert isinstance(error, LimitExceeded) and "more than 2 parts" in str(error)


def test_max_part_size(chunk_size):
    body = make_body([(b"", b"a" * 10), (b"", b"b" * 50), (b"", b"c")])
    assert len(parse(body, chunk_size, max_part_size=50)) == 3
    error = parse_error(body, chunk_size, max_part_size=49)
    assert isinstance(error, LimitExceeded) and "part 1 exceeds 49 bytes" in str(error)


def test_max_part_size_counts_data_only(chunk_size):
    # Headers, the delimiter's CRLF and held-back bytes do not count towards the part size.
    body = make_body([(b"Content-Type: application/dicom\r\n", b"x" * 10 + b"\r")])
    assert datas(parse(body, chunk_size, max_part_size=11)) == [b"x" * 10 + b"\r"]


def test_max_header_size(chunk_size):
    headers = b"Content-Type: application/dicom\r\nX-Pad: " + b"p" * 60 + b"\r\n"
    body = make_body([(headers, b"data")])
    limit = len(headers) - 1  # the block without the final line break
    assert datas(parse(body, chunk_size, max_header_size=limit)) == [b"data"]
    error = parse_error(body, chunk_size, max_header_size=limit - 1)
    assert isinstance(error, LimitExceeded) and f"headers of part 0 exceed {limit - 1} bytes" in str(error)


def test_unterminated_huge_headers_fail_early():
    parser = MultipartParser(B, max_header_size=1000)
    parser.feed(b"--BOUNDARY\r\n")
    with pytest.raises(LimitExceeded, match="headers of part 0"):
        for _ in range(100):
            parser.feed(b"X-Header: " + b"v" * 90 + b"\r\n")
    assert parser.buffered_bytes < 1200


def test_limit_exceeded_is_a_multipart_error_and_value_error():
    assert issubclass(LimitExceeded, MultipartError)
    assert issubclass(MultipartError, ValueError)


# --------------------------------------------------------------------------------------------------
# Malformed bodies
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"just some text, no multipart here\r\n", "no multipart delimiter '--BOUNDARY'"),
        (b"--OTHER\r\n\r\nx\r\n--OTHER--\r\n", "does not match"),
        (b"--BOUNDARYX\r\n\r\nx\r\n--BOUNDARYX--\r\n", "no multipart delimiter"),
        (b"--BOUNDARY\r\nContent-Type: a/b\r\n", "truncated in the headers of part 0"),
        (b"--BOUNDARY\r\nContent-Type: a/b", "truncated in the headers of part 0"),
        (b"--BOUNDARY\r\n", "truncated after the delimiter that opens part 0"),
        (b"--BOUNDARY", "no multipart delimiter"),
        (b"--BOUNDARY\r\n\r\npartial data", "truncated inside part 0 after 12 bytes"),
        (b"--BOUNDARY\r\n\r\npartial data\r\n", "truncated inside part 0"),
        (b"--BOUNDARY\r\n\r\ndata\r\n--BOUNDARY", "truncated inside part 0"),
        (b"--BOUNDARY\r\n\r\ndata\r\n--BOUNDARY-", "truncated inside part 0"),
        (b"--BOUNDARY\r\n\r\ndata\r\n--BOUNDARY\r\n", "truncated after the delimiter that opens part 1"),
        (b"--BOUNDARY\r\n\r\ndata\r\n--BOUNDARY\r\n\r\n", "truncated inside part 1 after 0 bytes"),
    ],
)
def test_truncated_or_missing_delimiters(body, message, chunk_size):
    error = parse_error(body, chunk_size)
    assert type(error) is MultipartError
    assert message in str(error)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (b"this is not a header\r\n", "invalid header line 'this is not a header'"),
        (b"Content-Type: a/b\r\ngarbage\r\n", "invalid header line 'garbage'"),
        (b": no name\r\n", "invalid header line"),
        (b"Bad Name: x\r\n", "invalid header line"),
        (b" folded-first: x\r\n", "continuation line"),
    ],
)
def test_garbage_after_a_delimiter_line(headers, message, chunk_size):
    body = make_body([(b"", b"ok"), (headers, b"data")])
    error = parse_error(body, chunk_size)
    assert message in str(error) and "part 1" in str(error)


def test_no_delimiter_in_a_long_preamble_fails_before_close():
    parser = MultipartParser(B)
    with pytest.raises(MultipartError, match=f"first {MAX_PREAMBLE_SIZE} bytes"):
        for _ in range(MAX_PREAMBLE_SIZE // 1000 + 2):
            parser.feed(b"y" * 999 + b"\n")
    assert parser.buffered_bytes < 100


def test_a_preamble_up_to_the_limit_is_accepted(chunk_size):
    preamble = b"p" * (MAX_PREAMBLE_SIZE - 10)
    assert datas(parse(make_body([(b"", b"x")], preamble=preamble), chunk_size)) == [b"x"]


@pytest.mark.parametrize(
    "make_error",
    [
        lambda p: (p.feed(b"no delimiter\r\n"), p.close()),
        lambda p: p.feed(b"--BOUNDARY\r\nnot a header\r\n\r\n"),
        lambda p: p.feed(b"--BOUNDARY\r\n\r\n" + b"x" * 20),  # max_part_size=10
    ],
)
def test_parser_refuses_to_continue_after_an_error(make_error):
    parser = MultipartParser(B, max_part_size=10)
    with pytest.raises(MultipartError) as first:
        make_error(parser)
    for again in (lambda: parser.feed(b"\r\n--BOUNDARY--\r\n"), parser.close):
        with pytest.raises(type(first.value), match="already failed"):
            again()


def test_feed_after_close_is_an_error():
    parser = MultipartParser(B)
    parser.feed(make_body([(b"", b"x")]))
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(MultipartError, match="after close"):
        parser.feed(b"more")
