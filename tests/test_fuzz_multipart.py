"""Property-based fuzzing (hypothesis) of arterys_http.multipart.

What must hold for every body, however it is split into chunks:

* a valid body (random RFC 2046 boundary; part data full of CR, LF, '--' and near-miss delimiters; with or
  without headers; LF, CRLF or mixed line ends; preamble and epilogue) parses back to exactly its parts;
* a damaged body (byte flips, insertions, deletions, truncations, duplicated delimiters) fails with
  MultipartError or LimitExceeded and nothing else, and the outcome (the parts, or the error) is the same
  for one feed(), for 1-byte feeds and for random splits;
* after every feed() the parser holds at most a header block or a delimiter with its padding;
* each limit raises LimitExceeded exactly when the body exceeds it;
* the Content-Type helpers raise nothing but MultipartError, whatever the text.

The "ci" profile (tests/conftest.py) keeps this file at a few seconds; `make fuzz` runs the "long" one.
"""

from __future__ import annotations

import encodings
import json
import pkgutil
import re
import string
import time
import urllib.parse
from dataclasses import dataclass

from hypothesis import example, given, note, settings
from hypothesis import strategies as st
from requests_toolbelt import MultipartEncoder

from arterys_http.multipart import (
    MAX_TRANSPORT_PADDING,
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


def examples(count: int) -> int:
    """`count` examples under the "ci" profile, scaled with the loaded one (20x under "long")."""
    return max(1, count * settings.default.max_examples // 100)


# --------------------------------------------------------------------------------------------------
# Running the parser
# --------------------------------------------------------------------------------------------------

HEADER_LIMIT = 16384  # the parser's default max_header_size
SLOW = 5.0  # seconds: far beyond what any body here needs, whatever the chunking


def memory_bound(boundary: str, max_header_size: int = HEADER_LIMIT) -> int:
    """The most the parser may hold between two feed() calls, whatever the chunk size.

    An incomplete header block (the delimiter line's LF, the block, and the two bytes that may begin the
    blank line), or a possible delimiter: CR, LF, '--', the boundary, transport padding and a last CR.
    """
    delimiter = len(b"\r\n--") + len(boundary) + MAX_TRANSPORT_PADDING + 1
    return max(max_header_size + 3, delimiter)


def parts_of(events: list) -> tuple:
    """The parts an event stream describes, checking that the stream itself is well formed."""
    parts: list[tuple] = []
    current: list[bytes] | None = None
    assert events and isinstance(events[-1], Epilogue), events[-1:]
    for event in events[:-1]:
        if isinstance(event, PartStart):
            assert current is None and event.index == len(parts)
            parts.append((event.headers, event.content_type, event.name, event.filename))
            current = []
        elif isinstance(event, PartData):
            assert current is not None and type(event.data) is memoryview and event.data.readonly and event.data
            current.append(event.data)
        else:
            assert isinstance(event, PartEnd) and current is not None, event
            data = b"".join(current)
            assert (event.index, event.size) == (len(parts) - 1, len(data))
            parts[-1] = (*parts[-1], data)
            current = None
    assert current is None
    return tuple(parts)


def outcome(boundary: str, chunks: list[bytes], **limits) -> tuple:
    """("ok", parts) or (error class, message); anything but a MultipartError propagates (a 500)."""
    parser = MultipartParser(boundary, **limits)
    bound = memory_bound(boundary, limits.get("max_header_size", HEADER_LIMIT))
    events: list = []
    started = time.monotonic()
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
            assert parser.buffered_bytes <= bound, (parser.buffered_bytes, bound)
        events += parser.close()
        assert parser.close() == []
    except MultipartError as error:
        try:
            parser.close()
        except MultipartError as again:  # a failed parser stays failed, with the same class (400 or 413)
            assert type(again) is type(error)
        else:
            raise AssertionError("close() after an error did not raise") from error
        return type(error), str(error)
    finally:
        # No hang: these bodies are a few KiB and take milliseconds even in 1-byte feeds. (A true endless
        # loop is stopped by pytest-timeout.)
        assert time.monotonic() - started < SLOW, f"parsing {len(chunks)} chunks took more than {SLOW} s"
    return "ok", parts_of(events)


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    """Chunks of `body` cut at the given positions (taken modulo its length; repeats give empty chunks)."""
    points = sorted(cut % (len(body) + 1) for cut in cuts)
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def one_byte(body: bytes) -> list[bytes]:
    return [body[i:i + 1] for i in range(len(body))]


def outcome_every_way(boundary: str, body: bytes, cuts: list[int], same_message: bool = True, **limits) -> tuple:
    """The outcome for one feed(), 1-byte feeds and the random split; fails unless all three agree.

    With same_message=False only the error class must agree (which of two exceeded limits is met first
    depends on the chunking).
    """
    whole = outcome(boundary, [body], **limits)
    note(f"outcome: {whole!r:.300}")
    for chunks in (one_byte(body), split_at(body, cuts)):
        result = outcome(boundary, chunks, **limits)
        assert (result if same_message else result[0]) == (whole if same_message else whole[0])
    return whole


cuts_strategy = st.lists(st.integers(min_value=0, max_value=1 << 30), max_size=12)


# --------------------------------------------------------------------------------------------------
# Valid bodies, with the parts they must parse to
# --------------------------------------------------------------------------------------------------

BCHARS = string.digits + string.ascii_letters + "'()+_,-./:=? "  # RFC 2046; a space may not come last
TOKEN_CHARS = string.digits + string.ascii_letters + "!#$%&'*+-.^_`|~"

boundaries = st.one_of(
    st.sampled_from(["-", "--", "B", "-B-", "- -", "=_Part_0", "x" * 70]),  # self-overlapping, shortest, longest
    st.builds(lambda head, last: head + last, st.text(BCHARS, max_size=69), st.sampled_from(BCHARS[:-1])),
)
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
# Header text: anything but CR, LF and lone surrogates (which have no UTF-8 form).
header_texts = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
EOLS = [b"\r\n", b"\n"]


def data_strategy(boundary: bytes) -> st.SearchStrategy[bytes]:
    """Bytes mixed with what confuses a parser: line ends, dashes, prefixes and near misses of the delimiter."""
    fragment = st.builds(
        lambda eol, cut, tail: (eol + b"--" + boundary)[:cut] + tail,
        st.sampled_from(EOLS),
        st.integers(min_value=1, max_value=len(boundary) + 4),
        st.sampled_from([b"", b"X", b"-", b"-x", b"--", b" ", b"\t \t", b"\r", b"\rX", b"\r\n", b"\n", b" X"]),
    )
    # Around MAX_TRANSPORT_PADDING: up to it this is a delimiter (repaired away below), beyond it data.
    long_padding = st.builds(
        lambda spaces, tail: b"\r\n--" + boundary + b" " * spaces + tail,
        st.integers(min_value=MAX_TRANSPORT_PADDING - 3, max_value=MAX_TRANSPORT_PADDING + 3),
        st.sampled_from([b"\r\n", b"\n", b"X"]),
    )
    pieces = st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\r", b"\n", b"\r\n", b"-", b"--", b" ", b"\t", b"\r\r", b"\n\n", b"\r\n\r\n"]),
        fragment,
        long_padding,
    )
    return st.lists(pieces, max_size=8).map(b"".join)


def real_delimiter(boundary: bytes) -> re.Pattern:
    """A delimiter as the parser (and RFC 2046, with LF alone allowed) knows it."""
    return re.compile(rb"\n--" + re.escape(boundary) + rb"(?:--|[ \t]{0,%d}\r?\n)" % MAX_TRANSPORT_PADDING)


def repair(data: bytes, boundary: bytes, eol_after: bytes) -> bytes:
    """Make `data` valid content between a line start and `eol_after` + '--boundary'.

    RFC 2046 forbids a delimiter inside part data: where one would be, an 'X' after its LF breaks it. With
    an LF line end after the data, a last CR is indistinguishable from a CRLF delimiter: an 'X' ends it.
    """
    delimiter = real_delimiter(boundary)
    while True:
        if eol_after == b"\n" and data.endswith(b"\r"):
            data += b"X"
        found = delimiter.search(b"\n" + data + eol_after)  # the leading LF: the line start before data
        if found is None:
            return data
        data = data[:found.start()] + b"X" + data[found.start():]


def decode_header(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Header:
    lines: list[bytes]  # without line ends
    name: str  # lower-cased
    value: str  # as the parser must report it


@st.composite
def content_types(draw) -> Header:
    media = f"{draw(tokens)}/{draw(tokens)}"
    params = "".join(f"; {draw(tokens)}={quote(draw(header_texts))}" for _ in range(draw(st.integers(0, 2))))
    value = media + params
    return Header([f"{draw(st.sampled_from(['Content-Type', 'content-type', 'CONTENT-TYPE']))}: {value}".encode()],
                  "content-type", value)


@st.composite
def dispositions(draw) -> tuple[Header, str, str]:
    """A Content-Disposition header and the name and filename it must give."""
    kind = draw(st.sampled_from(["form-data", "attachment", "Form-Data", "inline"]))
    name = draw(st.none() | header_texts)
    filename = draw(st.none() | header_texts)
    extended = draw(st.none() | header_texts)  # filename* (RFC 5987), preferred when it decodes to text
    params = []
    if name is not None:
        params.append(f"name={name}" if re.fullmatch(r'[^\s;"\\]+', name) else f"name={quote(name)}")
    if filename is not None:
        params.append(f"filename={quote(filename)}")
    if extended is not None:
        params.append(f"filename*=UTF-8''{urllib.parse.quote(extended, safe='')}")
    params = draw(st.permutations(params))
    value = "; ".join([kind, *params])
    header = Header([f"Content-Disposition: {value}".encode()], "content-disposition", value)
    return header, name or "", extended or filename or ""


@st.composite
def other_headers(draw) -> Header:
    """X- headers, sometimes folded onto continuation lines, sometimes not UTF-8, names often repeated."""
    name = draw(st.sampled_from(["X-A", "x-a", "X-Custom"]) | tokens.map(lambda t: "X-" + t))
    # Values that are not blank: how an empty value joins a repeated or folded one is no concern here.
    raw_values = header_texts.map(str.encode) | st.binary(max_size=8).map(
        lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
    values = draw(st.lists(raw_values.map(lambda raw: raw if decode_header(raw).strip() else b"v" + raw),
                           min_size=1, max_size=3))
    lines = [name.encode() + b":" + draw(st.sampled_from([b"", b" ", b"\t"])) + values[0]]
    value = decode_header(lines[0]).partition(":")[2].strip()
    for more in values[1:]:
        lines.append(draw(st.sampled_from([b" ", b"\t", b"  "])) + more)
        value = f"{value} {decode_header(lines[-1]).strip()}".strip()
    return Header(lines, name.lower(), value)


@dataclass
class Body:
    boundary: str
    raw: bytes
    parts: tuple  # as parts_of() gives them
    header_blocks: list[int]  # per part, the header block size the max_header_size limit is compared with


@st.composite
def bodies(draw, max_parts: int = 4) -> Body:
    boundary = draw(boundaries)
    bb = boundary.encode()
    line_ends = draw(st.sampled_from(["crlf", "lf", "mixed"]))

    def eol() -> bytes:
        return {"crlf": b"\r\n", "lf": b"\n"}.get(line_ends) or draw(st.sampled_from(EOLS))

    def padding() -> bytes:  # transport padding after a boundary, up to the most the parser takes
        return draw(st.sampled_from([b"", b"", b" ", b"\t", b" \t ", b" \t" * (MAX_TRANSPORT_PADDING // 2)]))

    content = data_strategy(bb)
    out: list[bytes] = []
    preamble = draw(st.none() | content)
    if preamble is not None:
        before = eol()
        out.append(repair(preamble, bb, before) + before)
    parts, blocks = [], []
    for _ in range(draw(st.integers(0, max_parts))):
        out.append(b"--" + bb + padding() + eol())
        headers: list[Header] = []
        name = filename = ""
        if draw(st.booleans()):
            headers.append(draw(content_types()))
        if draw(st.booleans()):
            disposition, name, filename = draw(dispositions())
            headers.append(disposition)
        headers += draw(st.lists(other_headers(), max_size=3))
        headers = draw(st.permutations(headers))
        block = b"".join(line + eol() for header in headers for line in header.lines)
        blocks.append(len(block) - 1)  # up to the LF that ends the last header line
        expected: dict[str, str] = {}
        for header in headers:
            old = expected.get(header.name)
            expected[header.name] = header.value if old is None else f"{old}, {header.value}"
        content_type = expected.get("content-type", "").split(";", 1)[0].strip().lower()
        after = eol()
        data = repair(draw(content), bb, after)
        out.append(block + eol() + data + after)
        parts.append((expected, content_type, name, filename, data))
    epilogue = draw(st.sampled_from([b"", b"\r\n", b"\n", b"--" + bb + b"\r\n\r\nnot a part\r\n--" + bb + b"--"])
                    | st.binary(max_size=20))
    out.append(b"--" + bb + b"--" + padding() + epilogue)
    return Body(boundary, b"".join(out), tuple(parts), blocks)


def toolbelt_body(files: list[bytes]) -> Body:
    """A body as requests_toolbelt (the original Arterys test tool's encoder) writes it."""
    fields = [("request_json", ("request", json.dumps({"inference_command": "x"}).encode(), "text/json"))]
    fields += [(str(i), (f"{i}.dcm", data, "application/dicom")) for i, data in enumerate(files, 1)]
    encoder = MultipartEncoder(fields=fields)
    parts = tuple(
        ({"content-disposition": f'form-data; name="{name}"; filename="{filename}"', "content-type": kind},
         kind, name, filename, data)
        for name, (filename, data, kind) in fields
    )
    raw = encoder.to_string()
    return Body(boundary_from_content_type(encoder.content_type), raw, parts, [])


# --------------------------------------------------------------------------------------------------
# (a) valid bodies parse back to their parts, whatever the chunking
# --------------------------------------------------------------------------------------------------


@settings(max_examples=examples(150))
@given(body=bodies(), cuts=cuts_strategy)
def test_valid_bodies_parse_to_their_parts_for_every_chunking(body: Body, cuts: list[int]):
    note(f"boundary={body.boundary!r} body={body.raw!r}")
    assert outcome_every_way(body.boundary, body.raw, cuts) == ("ok", body.parts)


@settings(max_examples=examples(20))
@given(files=st.lists(st.binary(max_size=300), max_size=3), cuts=cuts_strategy)
def test_requests_toolbelt_bodies_for_every_chunking(files: list[bytes], cuts: list[int]):
    body = toolbelt_body(files)
    assert outcome_every_way(body.boundary, body.raw, cuts) == ("ok", body.parts)


# --------------------------------------------------------------------------------------------------
# (b) damaged bodies: MultipartError or LimitExceeded only, and the same outcome for every chunking
# --------------------------------------------------------------------------------------------------

SEEDS = [
    toolbelt_body([b"\0" * 128 + b"DICM" + bytes(range(256)), b"licence\r\n--"]),
    toolbelt_body([]),
]


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    """A real body (a requests_toolbelt one or a generated one) after 1 to 4 random mutations."""
    seed = draw(st.sampled_from(SEEDS) | bodies(max_parts=3))
    bb = seed.boundary.encode()
    body = seed.raw
    tokens_ = [b"\r", b"\n", b"\r\n", b"-", b"--", b" ", b"\r\n\r\n", b"\r\n--" + bb, b"\n--" + bb, b"--" + bb,
               b"\r\n--" + bb + b"\r\n", b"\r\n--" + bb + b"--", b": ", b"Content-Type: a/b\r\n"]
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "delimiter", "duplicate"]))
        if kind == "flip" and at < len(body):
            body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1:]
        elif kind == "insert":
            body = body[:at] + draw(st.sampled_from(tokens_) | st.binary(min_size=1, max_size=8)) + body[at:]
        elif kind == "delete":
            body = body[:at] + body[at + draw(st.integers(1, 16)):]
        elif kind == "truncate":
            body = body[:at]
        elif kind == "delimiter":  # a copy of one of the body's own delimiter lines, elsewhere
            lines = [m.group() for m in re.finditer(rb"\r?\n--" + re.escape(bb) + rb"[^\n]{0,4}\n?", body)]
            if lines:
                body = body[:at] + draw(st.sampled_from(lines)) + body[at:]
        elif kind == "duplicate":
            size = draw(st.integers(1, 64))
            body = body[:at + size] + body[at:at + size] + body[at + size:]
    return seed.boundary, body


@settings(max_examples=examples(200))
@given(case=damaged(), cuts=cuts_strategy,
       limits=st.fixed_dictionaries({}, optional={"max_parts": st.integers(0, 4),
                                                  "max_part_size": st.integers(0, 400),
                                                  "max_header_size": st.integers(0, 200)}))
def test_damaged_bodies_fail_cleanly_and_alike_for_every_chunking(case, cuts, limits):
    # max_body_size is left out: a single feed() of the whole body knows its size before parsing it,
    # so it rightly reports 413 where 1-byte feeds may first meet a syntax error (400).
    boundary, body = case
    note(f"boundary={boundary!r} body={body!r}")
    outcome_every_way(boundary, body, cuts, **limits)


# --------------------------------------------------------------------------------------------------
# Content-Disposition values: never anything but a name and a file name (or a MultipartError)
# --------------------------------------------------------------------------------------------------

# Every codec the standard library has (a client names any charset it likes in filename*=), and names no
# codec has: empty, with a NUL, with spaces.
CODECS = sorted(module.name for module in pkgutil.iter_modules(encodings.__path__)) + ["", "a\0b", "utf 8"]


percent_escapes = st.lists(st.sampled_from(["%41", "%FF", "%C3%A9", "%E2%82", "%", "%ZZ", "a", ".", "xn--", "-"]),
                          max_size=4).map("".join)
charsets = st.one_of(st.sampled_from(["UTF-8", "utf-8", "iso-8859-1"]), st.sampled_from(CODECS), st.text(max_size=4))
rfc5987_values = st.builds(lambda charset, language, text: f"{charset}'{language}'{text}",
                           charsets, st.sampled_from(["", "en"]), percent_escapes)
parameters = st.builds(
    lambda name, space, value: f"{name}{space}={space}{value}",
    st.sampled_from(["name", "filename", "filename*", "FILENAME*"]) | tokens,
    st.sampled_from(["", " "]),
    st.one_of(rfc5987_values, rfc5987_values.map(quote), header_texts.map(quote), tokens, header_texts),
)
disposition_values = st.builds(
    lambda kind, params, tail: "; ".join([kind, *params]) + tail,
    st.sampled_from(["form-data", "attachment"]) | header_texts,
    st.lists(st.sampled_from(["filename*", "filename", "name"]).flatmap(
        lambda name: rfc5987_values.map(lambda value: f"{name}={value}")) | parameters, max_size=3),
    st.sampled_from(["", "", ";", '"']) | header_texts,
).map(str.encode)


@settings(max_examples=examples(300))
@given(value=disposition_values)
@example(value=b"form-data; filename*=undefined''%41")  # found by `make fuzz`: a UnicodeError, i.e. a 500
@example(value=b"attachment; filename*=a\0b''x.dcm")  # a ValueError from codecs.lookup()
def test_any_content_disposition_gives_strings(value: bytes):
    body = b"--B\r\nContent-Disposition: " + value + b"\r\n\r\ndata\r\n--B--"
    result = outcome("B", [body])
    if result[0] == "ok":
        [(headers, _, name, filename, data)] = result[1]
        assert isinstance(name, str) and isinstance(filename, str) and data == b"data"
    else:
        assert result[0] is MultipartError  # a 400 for an unparsable header line, never a 500


def filename_of(disposition: bytes) -> str:
    body = b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\nx\r\n--B--"
    [(_, _, _, filename, data)] = outcome("B", [body])[1]
    assert data == b"x"
    return filename


def test_filename_star_in_every_stdlib_charset():
    # Every codec Python has, as a client may name it in filename*=: a charset that cannot decode the
    # name leaves filename= in force; none may break the request.
    for charset in CODECS:
        for text in ["%41", "%FF", "%C3%A9", "%E2%82", "a.dcm", ""]:
            extended = quote(f"{charset}''{text}")  # quoted: some names have a space
            filename = filename_of(f"attachment; filename*={extended}; filename=plain.dcm".encode())
            assert isinstance(filename, str) and filename, (charset, text)
    assert filename_of(b"attachment; filename*=undefined''%41; filename=plain.dcm") == "plain.dcm"
    assert filename_of(b"attachment; filename*=a\0b''x.dcm; filename=plain.dcm") == "plain.dcm"


# --------------------------------------------------------------------------------------------------
# (c) memory: a header block or a possible delimiter at most, never the chunk or the part
# --------------------------------------------------------------------------------------------------


@st.composite
def stressing(draw) -> tuple[str, bytes, int]:
    """Bodies that tempt the parser to hold back: long header blocks, padding runs, partial delimiters."""
    boundary = draw(boundaries)
    bb = boundary.encode()
    limit = draw(st.integers(0, 300))
    pieces = st.one_of(
        st.sampled_from([b"\r\n--" + bb, b"\n--" + bb + b" " * MAX_TRANSPORT_PADDING, b"\r\n--" + bb + b"\t" * 40,
                         b"\r\n--" + bb + b"-", b"\r\n--" + bb[:-1], b"\r", b"\n", b"\r\n", b"\r\n\r\n",
                         b"X-Long: " + b"v" * 100 + b"\r\n", b"\r\n--" + bb + b"\r\n", b"\r\n--" + bb + b"--"]),
        st.binary(max_size=50),
    )
    body = b"--" + bb + b"\r\n" + b"".join(draw(st.lists(pieces, max_size=12)))
    return boundary, body, limit


@settings(max_examples=examples(100))
@given(case=stressing(), cuts=cuts_strategy)
def test_memory_stays_bounded_whatever_the_chunk_size(case, cuts):
    boundary, body, limit = case
    # outcome() checks buffered_bytes against memory_bound() after every feed; a 1-byte split keeps
    # the most, a single feed() the least.
    outcome_every_way(boundary, body, cuts, max_header_size=limit)


# --------------------------------------------------------------------------------------------------
# (d) limits trigger exactly when the body exceeds them
# --------------------------------------------------------------------------------------------------


def limit_near(actual: int) -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(-2, 2).map(lambda delta: max(0, actual + delta))


@settings(max_examples=examples(150))
@given(data=st.data(), body=bodies(), cuts=cuts_strategy)
def test_limits_trigger_exactly_when_exceeded(data, body: Body, cuts: list[int]):
    actual = {
        "max_body_size": len(body.raw),
        "max_parts": len(body.parts),
        "max_part_size": max((len(part[-1]) for part in body.parts), default=0),
        "max_header_size": max(body.header_blocks, default=-1),
    }
    limits = {name: data.draw(limit_near(value), label=name) for name, value in actual.items()}
    limits = {name: value for name, value in limits.items() if value is not None}
    exceeded = [name for name, value in limits.items() if actual[name] > value]
    result = outcome_every_way(body.boundary, body.raw, cuts, same_message=len(exceeded) < 2, **limits)
    if not exceeded:
        assert result == ("ok", body.parts)
        return
    assert result[0] is LimitExceeded
    if len(exceeded) == 1:
        [name] = exceeded
        words = {"max_body_size": "request body exceeds {} bytes", "max_parts": "more than {} parts",
                 "max_part_size": "exceeds {} bytes (the configured maximum part size)",
                 "max_header_size": "exceed {} bytes"}[name]
        assert words.format(limits[name]) in result[1]


# --------------------------------------------------------------------------------------------------
# (e) Content-Type helpers: MultipartError or a result, on any text
# --------------------------------------------------------------------------------------------------

CT_PIECES = ["multipart/related", "Multipart/Form-Data", "application/json", "/", ";", "; ", "=", " = ", '"', "\\",
             '\\"', " ", "\t", "boundary", "boundary=", "BOUNDARY=", "type=", '"abc"', "abc", "----=_Part_1", "é",
             "\0", "\n", "\u2028", "x" * 70, "x" * 71]
content_type_texts = st.one_of(
    st.text(),
    st.lists(st.sampled_from(CT_PIECES) | st.text(max_size=4), max_size=12).map("".join),
)


@settings(max_examples=examples(300))
@given(value=content_type_texts)
def test_content_type_helpers_raise_only_multipart_errors(value: str):
    try:
        media_type, params = parse_content_type(value)
    except MultipartError:
        pass
    else:
        assert media_type == media_type.lower() and media_type.count("/") == 1
        assert all(re.fullmatch("[" + re.escape(TOKEN_CHARS.lower()) + "]+", name) for name in params)
        assert all(isinstance(v, str) for v in params.values())
    try:
        boundary = boundary_from_content_type(value)
    except MultipartError:
        return
    MultipartParser(boundary)  # whatever the helper accepts, the parser accepts too


@settings(max_examples=examples(150))
@given(media=st.tuples(tokens, tokens),
       params=st.dictionaries(tokens.map(str.lower), st.text(st.characters(blacklist_categories=("Cs",))),
                              max_size=4),
       spacing=st.sampled_from(["", " ", "  \t"]))
def test_parse_content_type_round_trip(media, params, spacing):
    value = f"{media[0]}/{media[1]}" + "".join(f"{spacing};{spacing}{k}={spacing}{quote(v)}" for k, v in params.items())
    assert parse_content_type(value) == (f"{media[0]}/{media[1]}".lower(), params)


@settings(max_examples=examples(150))
@given(boundary=boundaries, quoted=st.booleans())
def test_boundary_from_content_type_round_trip(boundary: str, quoted: bool):
    written = quote(boundary) if quoted or " " in boundary else boundary
    value = f'multipart/related; type="application/dicom"; boundary={written}'
    assert boundary_from_content_type(value) == boundary
