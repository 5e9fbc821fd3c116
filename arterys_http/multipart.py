"""Sans-IO streaming parser for ``multipart/related`` (and ``multipart/form-data``) request bodies.

The bridge receives studies of hundreds of MiB, so the body is never held in memory: the caller reads
the request in chunks, gives each chunk to :meth:`MultipartParser.feed` and gets back events
(:class:`PartStart`, :class:`PartData`, :class:`PartEnd`, :class:`Epilogue`). The parser does no IO at
all, which keeps it testable at every chunk size and usable from any server (the habit of Werkzeug's
``sansio/multipart.py``).

Design
------
* Grammar (RFC 2046, made tolerant the way real clients need): a delimiter is ``\\n--boundary``, i.e. a
  line starting with ``--boundary``. The CR before that LF, when present, belongs to the delimiter, not
  to the part data. After the boundary come optional transport padding (spaces/tabs) and a line break
  (the delimiter opens a part) or ``--`` (the close delimiter). ``\\n--boundaryXYZ`` is therefore *not*
  a delimiter: inside a part it is data, before the first part it is preamble.
* The "line start" trick: the parser pretends the body begins with a line break and, after a part's
  headers, keeps the blank line's LF in the buffer. Both let a delimiter directly at the start of the
  body, or directly after the headers of a part with empty content, be found by the one search for
  ``\\n--boundary``. These "lead" bytes are never reported as data.
* Memory: the buffer is an immutable ``bytes`` object plus a read offset. Within one ``feed()`` the
  parser only moves the offset (no re-copying of the rest after every part); at the end of ``feed()``
  only the unconsumed tail is kept. The tail is what could still be the start of a delimiter (at most
  the delimiter length plus a little padding), or an incomplete header block (bounded by
  ``max_header_size``), so memory stays about one chunk plus the boundary length whatever the part size.
* Speed: part data is located with ``bytes.find`` (C speed); Python code runs per chunk and per part,
  never per byte of part data. A chunk made only of part data is passed on without being copied.
* Errors: :class:`MultipartError` (a ``ValueError``) for malformed bodies, the bridge answers 400;
  :class:`LimitExceeded` (a subclass) when a configured limit is hit, the bridge answers 413. Every
  error decision depends on the body only, never on how it was split into chunks. After an error the
  parser is dead: further calls raise again.
"""

from __future__ import annotations

import codecs
import re
import urllib.parse
from dataclasses import dataclass

__all__ = [
    "Epilogue",
    "Event",
    "LimitExceeded",
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "boundary_from_content_type",
    "parse_content_type",
]

#: RFC 2046: a boundary is 1 to 70 characters.
MAX_BOUNDARY_LENGTH = 70
#: Bytes of preamble tolerated before the first delimiter. Real clients send none or one line; a body
#: without any delimiter in its first 64 KiB almost surely came with the wrong boundary, and saying so
#: early spares reading the whole (possibly huge) body first.
MAX_PREAMBLE_SIZE = 64 * 1024
#: Spaces/tabs allowed between a boundary and its line break. Bounded so that a run of spaces in part
#: data after ``--boundary`` cannot make the parser hold back an unbounded amount of data.
MAX_TRANSPORT_PADDING = 1024


class MultipartError(ValueError):
    """The body is not valid multipart (the bridge answers 400)."""


class LimitExceeded(MultipartError):
    """The body exceeds a configured limit (the bridge answers 413)."""


# --------------------------------------------------------------------------------------------------
# Header value helpers
# --------------------------------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN_RE = re.compile(_TOKEN)
_TYPE_RE = re.compile(rf"\s*({_TOKEN})\s*(?:/\s*({_TOKEN})\s*)?")
# One ";" and an optional name=value. Unquoted values are accepted beyond the strict token syntax
# because real clients send e.g. boundary=----=_Part_1 unquoted; the boundary check judges them later.
_PARAM_RE = re.compile(rf';\s*(?:({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]*))\s*)?')
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
# RFC 2046 bchars; the last character may not be a space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]")


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into the lower-cased media type and its parameters.

    ``'Multipart/Related ; type="application/json";  boundary="abc"'`` gives
    ``('multipart/related', {'type': 'application/json', 'boundary': 'abc'})``. Parameter names are
    lower-cased, quoted values unquoted (backslash escapes resolved), values otherwise kept as sent.
    Raises :class:`MultipartError` on anything that does not have this shape.
    """
    match = _TYPE_RE.match(value)
    if not value.strip() or match is None or match.group(2) is None:
        raise MultipartError(f"invalid Content-Type {value!r}: expected 'type/subtype; name=value; ...'")
    return f"{match.group(1)}/{match.group(2)}".lower(), _parse_params(value, match.end())


def _parse_params(value: str, pos: int) -> dict[str, str]:
    params: dict[str, str] = {}
    while pos < len(value):
        match = _PARAM_RE.match(value, pos)
        if match is None:
            raise MultipartError(
                f"invalid parameters in {value!r} at {value[pos:pos + 20]!r}: expected '; name=value'"
            )
        pos = match.end()
        if match.group(1) is None:  # an empty parameter, e.g. a trailing ';'
            continue
        name = match.group(1).lower()
        if name in params:
            # Two boundaries (or two of anything) is ambiguous: refuse rather than guess.
            raise MultipartError(f"parameter {name!r} appears twice in {value!r}")
        quoted = match.group(2)
        params[name] = _QUOTED_PAIR_RE.sub(r"\1", quoted) if quoted is not None else match.group(3)
    return params


def _check_boundary(boundary: str) -> None:
    if not boundary:
        raise MultipartError("the multipart boundary is empty")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartError(
            f"the multipart boundary is {len(boundary)} characters long; "
            f"RFC 2046 allows at most {MAX_BOUNDARY_LENGTH}"
        )
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise MultipartError(
            f"the multipart boundary {boundary!r} contains characters RFC 2046 does not allow: use letters, "
            "digits and '()+_,-./:=? (a space is allowed, but not at the end)"
        )


def boundary_from_content_type(value: str) -> str:
    """Return the ``boundary`` parameter of a Content-Type value, checked against RFC 2046.

    The media type itself is not checked here: deciding which types are acceptable (415) is the
    caller's business.
    """
    _, params = parse_content_type(value)
    if "boundary" not in params:
        raise MultipartError(f"Content-Type {value!r} has no boundary parameter")
    boundary = params["boundary"]
    _check_boundary(boundary)
    return boundary


def _decode_header_bytes(raw: bytes) -> str:
    # Browsers put raw UTF-8 file names in headers; anything that is not UTF-8 is taken as Latin-1,
    # which cannot fail, so an odd header never breaks the request.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parse_headers(block: bytes, index: int) -> dict[str, str]:
    """Parse a part's header block (lines separated by LF or CRLF, no final blank line)."""
    headers: dict[str, str] = {}
    if not block:
        return headers
    name = ""
    for raw in block.split(b"\n"):
        line = _decode_header_bytes(raw.removesuffix(b"\r"))
        if line[:1] in (" ", "\t"):  # folded continuation of the previous header
            if not name:
                raise MultipartError(f"part {index}: the headers start with a continuation line {line!r}")
            headers[name] = f"{headers[name]} {line.strip()}".strip()
            continue
        key, colon, value = line.partition(":")
        name = key.strip().lower()
        if not colon or not _TOKEN_RE.fullmatch(name):
            raise MultipartError(f"part {index}: invalid header line {line[:80]!r} (expected 'Name: value')")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _decode_rfc5987(value: str) -> str:
    """Decode ``charset'language'percent-encoded`` (RFC 5987); '' when it cannot be decoded."""
    parts = value.split("'", 2)
    if len(parts) != 3:
        return ""
    try:
        codecs.lookup(parts[0])  # unquote() skips decoding when nothing is %-escaped; check anyway
        return urllib.parse.unquote(parts[2], encoding=parts[0], errors="strict")
    except (LookupError, ValueError):
        # ValueError: besides UnicodeDecodeError, the client-chosen charset may be a codec that raises a
        # plain UnicodeError ('undefined'), or a name with a NUL, which codecs.lookup() refuses so.
        return ""


def _disposition_names(value: str) -> tuple[str, str]:
    """``name`` and ``filename`` from a Content-Disposition value; lenient, since both are optional."""
    match = _TOKEN_RE.match(value.strip())
    if match is None:
        return "", ""
    try:
        params = _parse_params(value.strip(), match.end())
    except MultipartError:
        return "", ""
    filename = _decode_rfc5987(params["filename*"]) if "filename*" in params else ""
    return params.get("name", ""), filename or params.get("filename", "")


# --------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------


@dataclass
class PartStart:
    """A new part begins; its headers are complete."""

    index: int  #: 0-based part number
    headers: dict[str, str]  #: names lower-cased, values stripped
    content_type: str  #: media type only, lower-cased; '' when absent
    name: str  #: from Content-Disposition, or ''
    filename: str  #: from Content-Disposition, or ''


@dataclass
class PartData:
    """Bytes of the current part (never empty): a read-only view of the chunk fed, not a copy (the bridge
    copies each byte once, when it frames the chunk for the worker)."""

    data: memoryview


@dataclass
class PartEnd:
    """The current part is complete."""

    index: int
    size: int


@dataclass
class Epilogue:
    """The close delimiter was seen: the body is complete (whatever follows is ignored)."""


Event = PartStart | PartData | PartEnd | Epilogue

# --------------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------------

_PREAMBLE, _HEADERS, _DATA, _EPILOGUE = "preamble", "headers", "data", "epilogue"
# What follows "\n--boundary": a part opens, the body closes, more bytes are needed, or not a delimiter.
_OPEN, _CLOSE, _MORE, _NOT = "open", "close", "more", "not"
_CR, _LF, _DASH = 13, 10, 45
_AFTER_BOUNDARY = frozenset(b" \t\r\n-")  # the bytes that can follow the boundary in a delimiter
_PADDING_RE = re.compile(rb"[ \t]{0,%d}" % (MAX_TRANSPORT_PADDING + 1))
# End of a header block: the LF ending the last header line (or the delimiter line), then an empty line.
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")


class MultipartParser:
    """Incremental multipart parser: ``feed()`` chunks, then ``close()``; both return events.

    Limits (``None`` means unlimited): ``max_body_size`` counts every byte fed, preamble and epilogue
    included; ``max_parts`` the number of parts; ``max_part_size`` the content bytes of one part;
    ``max_header_size`` the header block of one part.
    """

    def __init__(
        self,
        boundary: str,
        *,
        max_body_size: int | None = None,
        max_parts: int | None = None,
        max_part_size: int | None = None,
        max_header_size: int = 16384,
    ) -> None:
        _check_boundary(boundary)
        self._boundary = boundary
        self._delim = b"\n--" + boundary.encode("ascii")
        self._max_body_size = max_body_size
        self._max_parts = max_parts
        self._max_part_size = max_part_size
        self._max_header_size = max_header_size
        # The virtual line break of the "line start" trick (see the module docstring).
        self._buf = b"\n"
        self._pos = 0
        self._lead = False  # True when _buf[_pos] is a kept LF that is not part data
        self._state = _PREAMBLE
        self._body_size = 0
        self._preamble_size = 0
        self._part = -1
        self._part_size = 0
        self._scanned = 0  # header bytes already searched for the blank line
        self._error: MultipartError | None = None
        self._closed = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet turned into events (held back or incomplete headers)."""
        return len(self._buf) - self._pos

    # -- public API ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next chunk of the body and return the events it completes.

        Raises :class:`MultipartError` (or :class:`LimitExceeded`); events of the failing chunk are then
        dropped, as the request is lost anyway.
        """
        self._check_alive()
        if self._closed:
            raise MultipartError("feed() called after close()")
        events: list[Event] = []
        try:
            self._count_body(len(data))
            if self._state == _EPILOGUE or not data:
                return events
            self._append(bytes(data))
            while self._step(events):
                pass
            self._compact()
        except MultipartError as exc:
            self._error = exc
            raise
        return events

    def close(self) -> list[Event]:
        """Signal the end of the body; raises :class:`MultipartError` unless the body was complete."""
        self._check_alive()
        if self._closed:
            return []
        self._closed = True
        if self._state != _EPILOGUE:
            self._error = self._incomplete_error()
            raise self._error
        return []

    # -- bookkeeping -----------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._error is not None:
            # A fresh exception of the same class, so the caller maps it to the same status again.
            raise type(self._error)(f"{self._error} (the parser already failed)") from self._error

    def _count_body(self, size: int) -> None:
        self._body_size += size
        if self._max_body_size is not None and self._body_size > self._max_body_size:
            raise LimitExceeded(f"request body exceeds {self._max_body_size} bytes (the configured maximum)")

    def _append(self, data: bytes) -> None:
        # After _compact() the buffer holds only a short tail, so this copies about one chunk; an
        # empty tail (the usual case for big chunks of part data) costs no copy at all.
        self._buf = self._buf + data if self._pos < len(self._buf) else data
        self._pos = 0

    def _compact(self) -> None:
        # Keep only the unconsumed tail so that the chunk just fed can be freed.
        if self._pos:
            self._buf = self._buf[self._pos:]
            self._pos = 0

    def _step(self, events: list[Event]) -> bool:
        """Advance the state machine once; False when more input is needed."""
        if self._state == _DATA:
            return self._step_data(events)
        if self._state == _HEADERS:
            return self._step_headers(events)
        if self._state == _PREAMBLE:
            return self._step_preamble(events)
        self._pos = len(self._buf)  # epilogue: ignored
        return False

    # -- delimiters ------------------------------------------------------------------------------

    def _classify(self, after: int) -> tuple[str, int]:
        """Decide what the bytes after ``\\n--boundary`` (ending at ``after``) make of it.

        Returns the kind and, for ``_OPEN``, the index of the LF that ends the delimiter line.
        """
        buf = self._buf
        if after < len(buf) and buf[after] not in _AFTER_BOUNDARY:
            return _NOT, 0  # fast path for near misses such as "--boundaryXYZ"
        if buf.startswith(b"--", after):
            return _CLOSE, 0
        end = _PADDING_RE.match(buf, after).end()
        if end - after > MAX_TRANSPORT_PADDING:
            return _NOT, 0
        if end == len(buf):
            return _MORE, 0
        byte = buf[end]
        if byte == _LF:
            return _OPEN, end
        if byte == _CR:
            if end + 1 == len(buf):
                return _MORE, 0
            return (_OPEN, end + 1) if buf[end + 1] == _LF else (_NOT, 0)
        if byte == _DASH and end == after and end + 1 == len(buf):
            return _MORE, 0  # a single '-' may become the '--' of the close delimiter
        return _NOT, 0

    def _find_delimiter(self) -> tuple[int, str, int]:
        """The first real delimiter from ``_pos`` on: (index of its LF or -1, kind, LF ending its line).

        Near misses such as ``\\n--boundaryXYZ`` are skipped here, inside one call, so that data full of
        them costs one ``find`` each and still comes out as one event per chunk.
        """
        search = self._pos
        while True:
            found = self._buf.find(self._delim, search)
            if found < 0:
                return found, _NOT, 0
            kind, newline = self._classify(found + len(self._delim))
            if kind != _NOT:
                return found, kind, newline
            search = found + 1

    def _holdback(self) -> int:
        """Index from which the buffer's end could be the beginning of a delimiter.

        Only the last LF can start one, because a boundary contains no LF; a CR just before it (or a
        CR as the very last byte) could be the delimiter's CRLF, so it is held back too.
        """
        buf, size = self._buf, len(self._buf)
        newline = buf.rfind(b"\n", max(self._pos, size - len(self._delim) + 1))
        if newline >= 0 and self._delim.startswith(buf[newline:]):
            hold = newline
        elif size > self._pos and buf[size - 1] == _CR:
            return size - 1
        else:
            return size
        return hold - 1 if hold > self._pos and buf[hold - 1] == _CR else hold

    def _open_part(self, newline: int) -> None:
        if self._max_parts is not None and self._part + 1 >= self._max_parts:
            raise LimitExceeded(f"the request has more than {self._max_parts} parts (the configured maximum)")
        self._part += 1
        self._part_size = 0
        self._scanned = 0
        self._pos = newline  # keep the delimiter line's LF: an empty header block is then "\n\r\n"
        self._lead = False
        self._state = _HEADERS

    def _close_body(self, events: list[Event]) -> None:
        events.append(Epilogue())
        self._state = _EPILOGUE
        self._pos = len(self._buf)

    # -- states ----------------------------------------------------------------------------------

    def _step_preamble(self, events: list[Event]) -> bool:
        found, kind, newline = self._find_delimiter()
        if found < 0:
            self._skip_preamble(self._holdback())
            return False
        self._skip_preamble(found)
        if kind == _MORE:
            return False
        if kind == _CLOSE:  # a body with no parts at all: valid syntax; the caller judges its content
            self._close_body(events)
            return False
        self._open_part(newline)
        return True

    def _skip_preamble(self, to: int) -> None:
        # Counts the virtual leading LF too; harmless, and the same whatever the chunking.
        self._preamble_size += to - self._pos
        self._pos = to
        if self._preamble_size > MAX_PREAMBLE_SIZE:
            raise MultipartError(
                f"no multipart delimiter '--{self._boundary}' in the first {MAX_PREAMBLE_SIZE} bytes of the "
                "body: the boundary in Content-Type does not match the body"
            )

    def _step_headers(self, events: list[Event]) -> bool:
        buf, pos = self._buf, self._pos
        match = _BLANK_LINE_RE.search(buf, pos + max(0, self._scanned - 2))
        # The block lies between the delimiter line's LF (at pos) and the blank line. While the blank
        # line is not seen, the last two bytes may be its beginning ("\n\r"), so they do not count: the
        # limit then triggers exactly as it would with the whole block in one chunk.
        block_size = (match.start() if match else len(buf) - 2) - (pos + 1)
        if block_size > self._max_header_size:
            raise LimitExceeded(
                f"the headers of part {self._part} exceed {self._max_header_size} bytes "
                "(the configured maximum)"
            )
        if match is None:
            self._scanned = len(buf) - pos
            return False
        headers = _parse_headers(buf[pos + 1:match.start()], self._part)
        events.append(self._part_start(headers))
        self._pos = match.end() - 1  # keep the blank line's LF: the delimiter may follow at once
        self._lead = True
        self._state = _DATA
        return True

    def _part_start(self, headers: dict[str, str]) -> PartStart:
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        name, filename = _disposition_names(headers.get("content-disposition", ""))
        return PartStart(self._part, headers, content_type, name, filename)

    def _step_data(self, events: list[Event]) -> bool:
        buf = self._buf
        start = self._pos + 1 if self._lead else self._pos  # first byte that is part data
        found, kind, newline = self._find_delimiter()
        if found < 0:
            self._emit(events, start, self._holdback())
            return False
        end = found - 1 if found - 1 >= start and buf[found - 1] == _CR else found
        self._emit(events, start, end)
        if kind == _MORE:
            return False
        events.append(PartEnd(self._part, self._part_size))
        if kind == _CLOSE:
            self._close_body(events)
            return False
        self._open_part(newline)
        return True

    def _emit(self, events: list[Event], start: int, stop: int) -> None:
        """Report ``buf[start:stop]`` as part data and consume it."""
        if stop < start:  # nothing consumable: the lead LF may still begin a delimiter
            return
        if stop > start:
            self._part_size += stop - start
            if self._max_part_size is not None and self._part_size > self._max_part_size:
                raise LimitExceeded(
                    f"part {self._part} exceeds {self._max_part_size} bytes "
                    "(the configured maximum part size)"
                )
            events.append(PartData(memoryview(self._buf)[start:stop]))
        self._pos = stop
        self._lead = False

    def _incomplete_error(self) -> MultipartError:
        delim = f"'--{self._boundary}'"
        if self._state == _PREAMBLE:
            if self._body_size == 0:
                return MultipartError(f"the request body is empty: expected parts delimited by {delim}")
            return MultipartError(
                f"no multipart delimiter {delim} found in the {self._body_size}-byte body: "
                "the boundary in Content-Type does not match the body"
            )
        if self._state == _HEADERS and len(self._buf) - self._pos > 1:
            return MultipartError(
                f"the body is truncated in the headers of part {self._part}: no blank line ends them"
            )
        if self._state == _HEADERS:
            return MultipartError(
                f"the body is truncated after the delimiter that opens part {self._part}: "
                f"the closing delimiter '--{self._boundary}--' is missing"
            )
        return MultipartError(
            f"the body is truncated inside part {self._part} after {self._part_size} bytes: "
            f"the closing delimiter '--{self._boundary}--' is missing"
        )
