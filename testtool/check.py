"""Judges a received answer against docs/protocol.md, in sentences a model author can act on.

Why on top of `arterys_http.protocol.check_result`: that checker sees the result JSON and its binaries, as
the worker and bridge do. The tool sees the wire too, so it also checks what only a client can: the
response and part Content-Types, the order of the parts, and the hashes line, recomputed from the bytes
that were really sent and received rather than merely checked for shape. A server that hashes
something else than what it received (or loses a part) is caught here.
"""

from __future__ import annotations

from arterys_http.multipart import MultipartError, parse_content_type
from arterys_http.protocol import (
    DICOM_TYPES,
    MASK_TYPES,
    ImageInfo,
    StudyIndex,
    check_hashes_line,
    check_result,
    sha256_hex,
)
from testtool.answer import HASHES_CONTENT_TYPE, ReceivedAnswer
from testtool.study import LoadedStudy

MASK_CONTENT_TYPE = "application/binary"
DICOM_CONTENT_TYPE = "application/dicom"
JSON_CONTENT_TYPE = "application/json"


def study_index(study: LoadedStudy) -> StudyIndex:
    """The input as the protocol checker needs it."""
    return StudyIndex.of(
        ImageInfo(i.sop_instance_uid, i.series_instance_uid, i.rows, i.cols, i.frames) for i in study.images
    )


def expected_content_type(binary_type) -> str | None:
    if binary_type in MASK_TYPES:
        return MASK_CONTENT_TYPE
    if binary_type in DICOM_TYPES:
        return DICOM_CONTENT_TYPE
    return None


def check_answer(answer: ReceivedAnswer, input_hash: str | None, study: StudyIndex | None = None) -> list[str]:
    """Every violation of the answer. `input_hash` is the SHA-256 of the parts sent (None: unknown)."""
    problems = _check_response_type(answer.content_type)
    problems += answer.problems
    if not answer.parts:
        if answer.complete or not answer.problems:
            problems.append("the response has no parts: expected the result JSON, the binaries and the hashes")
        return problems

    first = answer.parts[0]
    if first.content_type != JSON_CONTENT_TYPE:
        problems.append(f"part 1 must be the result JSON with Content-Type {JSON_CONTENT_TYPE}, "
                        f"got {first.content_type or 'none'}")
    result, json_error = answer.result_json()
    if json_error:
        problems.append(json_error)

    problems += _check_hashes(answer, input_hash)
    binaries = answer.binary_parts
    if isinstance(result, dict):
        problems += _check_binary_types(result, binaries)
    if json_error is None:
        problems += check_result(result, [part.data for part in binaries], study)
    return problems


def _check_response_type(content_type: str) -> list[str]:
    try:
        media_type, params = parse_content_type(content_type or "")
    except MultipartError:
        return [f"the response Content-Type must be multipart/related, got {content_type!r}"]
    if media_type != "multipart/related":
        return [f"the response Content-Type must be multipart/related, got {media_type}"]
    if not params.get("boundary"):
        return ["the response Content-Type has no boundary parameter"]
    return []


def _check_hashes(answer: ReceivedAnswer, input_hash: str | None) -> list[str]:
    last = answer.parts[-1]
    if answer.hashes_part is None:
        position = f"part {last.index + 1}" if len(answer.parts) > 1 else "the only part (the JSON)"
        return [f"the last part must be the {HASHES_CONTENT_TYPE} hashes line '<input_hash>:<output_hash>'; "
                f"{position} is {last.content_type or 'without Content-Type'}"]
    text = answer.hashes_text or ""
    shape = check_hashes_line(text)
    if shape:
        return shape
    declared_input, _, declared_output = text.partition(":")
    problems = []
    if input_hash is not None and declared_input != input_hash:
        problems.append(
            f"hashes part: the input hash is {declared_input} but the parts this tool sent hash to {input_hash}: "
            "the server hashed something other than the request it received"
        )
    output_hash = sha256_hex([answer.json_bytes, *(part.data for part in answer.binary_parts)])
    if declared_output != output_hash:
        problems.append(
            f"hashes part: the output hash is {declared_output} but the result JSON and the "
            f"{len(answer.binary_parts)} binary part(s) received hash to {output_hash}"
        )
    return problems


def _check_binary_types(result: dict, binaries) -> list[str]:
    parts = result.get("parts")
    if not isinstance(parts, list):
        return []
    problems = []
    for index, (entry, binary) in enumerate(zip(parts, binaries, strict=False)):
        binary_type = entry.get("binary_type") if isinstance(entry, dict) else None
        expected = expected_content_type(binary_type)
        if expected and binary.content_type != expected:
            problems.append(
                f"part {binary.index + 1} (the binary of parts[{index}], a {binary_type}) has Content-Type "
                f"{binary.content_type or 'none'}; expected {expected}"
            )
    return problems
