"""Builds requests the way real Arterys clients do and reads answers with an independent decoder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import requests
from requests_toolbelt import MultipartEncoder
from requests_toolbelt.multipart import decoder


def original_tool_fields(request_json: dict, instances: list[Path], attachments: list[tuple[str, bytes]] = ()):
    """Exactly the fields of the original inference-test-tool: form-data parts with names and filenames."""
    fields, count = [], 0
    for filename, data in attachments:
        count += 1
        fields.append((str(count), (filename, data, "application/octet-stream")))
    for path in instances:
        count += 1
        fields.append((str(count), (Path(path).name, Path(path).read_bytes(), "application/dicom")))
    fields.insert(0, ("request_json", ("request", json.dumps(request_json).encode("utf-8"), "text/json")))
    return fields


def post_like_original_tool(url: str, request_json: dict, instances, attachments=(), **kwargs) -> requests.Response:
    encoder = MultipartEncoder(fields=original_tool_fields(request_json, instances, attachments))
    boundary = encoder.content_type.split("boundary=")[1]
    headers = {"Content-Type": f'multipart/related; boundary="{boundary}"', **kwargs.pop("headers", {})}
    return requests.post(url, data=encoder, headers=headers, **kwargs)


def request_part_contents(request_json: dict, instances, attachments=()) -> list[bytes]:
    """The contents of every part, in order, as the input hash covers them."""
    return ([json.dumps(request_json).encode("utf-8")] + [data for _, data in attachments]
            + [Path(p).read_bytes() for p in instances])


def hand_built_body(parts: list[tuple[str, bytes]], boundary: str) -> bytes:
    """multipart/related with only a Content-Type per part (no Content-Disposition), CRLF throughout."""
    body = b""
    for content_type, data in parts:
        body += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def raw_post_head(body: bytes, boundary: str = "b", path: str = "/") -> bytes:
    """The request line and headers of a multipart/related POST of `body`, for clients on a raw socket."""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()


@dataclass
class ParsedAnswer:
    json: dict
    json_bytes: bytes
    binaries: list[bytes]
    content_types: list[str]
    hashes: str


def parse_answer(response: requests.Response) -> ParsedAnswer:
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["Content-Type"].startswith("multipart/related; boundary=")
    parts = decoder.MultipartDecoder.from_response(response).parts
    types = [p.headers.get(b"Content-Type", b"").decode() for p in parts]
    assert types[0] == "application/json" and types[-1] == "text/plain", types
    return ParsedAnswer(json.loads(parts[0].content), parts[0].content, [p.content for p in parts[1:-1]],
                        types[1:-1], parts[-1].text)


def expected_hashes_line(input_parts: list[bytes], answer: ParsedAnswer) -> str:
    input_hash = hashlib.sha256(b"".join(input_parts)).hexdigest()
    output = hashlib.sha256(answer.json_bytes)
    for binary in answer.binaries:
        output.update(binary)
    return f"{input_hash}:{output.hexdigest()}"


def expected_input_hash(parts: list[bytes]) -> str:
    """SHA-256 of the request's parts (the JSON part first), as the protocol defines the input hash."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()
