"""Writes multipart/related bodies the way the protocol lays them out, without holding their contents.

The answer: the result JSON part, one part per entry of `parts`, then the hashes part
`<input_hash>:<output_hash>` (`output_hash` = SHA-256 of the JSON part followed by every binary, in
order). `AnswerLayout` knows every part's size before any binary byte exists, so the exact
Content-Length can be sent first and the binaries streamed after it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from arterys_http import media

HASHES_LENGTH = 64 + 1 + 64


def new_boundary() -> str:
    # 128 random bits: the chance that it occurs inside a mask is negligible.
    return "arterys-" + secrets.token_hex(16)


def part_head(boundary: str, content_type: str, first: bool = False, disposition: str = "") -> bytes:
    """The delimiter and headers that open a part (the CRLF ending the previous part included)."""
    extra = f"Content-Disposition: {disposition}\r\n" if disposition else ""
    return (b"" if first else b"\r\n") + f"--{boundary}\r\n{extra}Content-Type: {content_type}\r\n\r\n".encode()


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


@dataclass
class AnswerLayout:
    """An answer's parts, known before their bytes: `content_length()` is exact."""

    boundary: str
    json_bytes: bytes
    sizes: list[int]
    content_types: list[str]

    @property
    def content_type(self) -> str:
        return f"{media.MULTIPART_RELATED}; boundary={self.boundary}"

    def content_length(self) -> int:
        length = len(self.head_of_json()) + len(self.json_bytes)
        for index, size in enumerate(self.sizes):
            length += len(self.head_of_part(index)) + size
        return length + len(self.head_of_hashes()) + HASHES_LENGTH + len(closing(self.boundary))

    def head_of_json(self) -> bytes:
        return part_head(self.boundary, media.JSON, first=True)

    def head_of_part(self, index: int) -> bytes:
        return part_head(self.boundary, self.content_types[index])

    def head_of_hashes(self) -> bytes:
        return part_head(self.boundary, media.HASHES)

    def end(self) -> bytes:
        return closing(self.boundary)
