"""What bridge and worker must agree on comes from contract/ alone: these fail when a copy drifts from it.

The error table (contract/errors.py) against the worker's error classes, the bridge's answers and the
table of docs/protocol.md; the shared limits (contract/limits.py) against both services' defaults, as their
command lines give them.
"""

from __future__ import annotations

import os
import re

import grpc

from bridge import errors as bridge_errors
from bridge.channel import channel_options
from bridge.config import parse_config as bridge_config
from contract import errors as contract
from contract import limits
from tests.services import ROOT
from worker.serving import errors as worker_errors
from worker.serving.config import parse_config as worker_config


def worker_error_classes() -> list[type]:
    found, pending = [], [worker_errors.WorkerError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_a_worker_ends_a_call_with_is_a_row_of_the_contract_with_its_status():
    classes = worker_error_classes()
    assert len(classes) >= 15
    for cls in classes:
        kind = contract.BY_CODE.get(cls.error_code)
        assert kind is not None, f"{cls.__name__}: {cls.error_code} is not in contract/errors.py"
        assert kind.grpc_status == cls.status, cls.__name__
    sent = {cls.error_code for cls in classes}
    assert sent == {kind.code for kind in contract.TABLE if kind.grpc_status is not None}


def test_the_bridge_answers_each_worker_error_with_the_contract_status():
    for cls in worker_error_classes():
        answer = bridge_errors.from_worker(cls.status, "the worker's words", cls.error_code)
        kind = contract.BY_CODE[cls.error_code]
        assert (answer.code, answer.status) == (kind.code, kind.http_status), cls.__name__
        assert (answer.retry_after is not None) == kind.retryable, cls.__name__
        assert answer.message == (kind.public_message or "the worker's words"), cls.__name__


def test_the_bridges_table_is_the_contracts():
    assert bridge_errors.ERRORS == {k.code: (k.http_status, k.retryable, k.meaning) for k in contract.TABLE}
    assert set(bridge_errors.response_codes()) == {"200", *(str(k.http_status) for k in contract.TABLE)}


def test_a_failure_of_the_channel_itself_maps_to_a_code_of_the_contract():
    for status in grpc.StatusCode:
        if status != grpc.StatusCode.OK:
            assert bridge_errors.from_worker(status, "channel details").code in contract.BY_CODE


def test_the_documented_error_table_is_the_contracts():
    text = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    section = text[text.index("## Errors"):text.index("### Requests the HTTP server refuses")]
    documented = set()
    for status, codes in re.findall(r"^\| (\d{3}) \| (.*?) \|", section, flags=re.MULTILINE):
        documented |= {(int(status), code) for code in re.findall(r"`([a-z_]+)`", codes)}
    documented |= {(int(status), code) for status, code in re.findall(r"`(\d{3}) ([a-z_]+)`", section)}
    assert documented == {(kind.http_status, kind.code) for kind in contract.TABLE}


def test_a_status_message_stays_within_its_bound_and_says_it_was_cut():
    message = contract.status_message("é" * 5000)
    assert len(message.encode()) <= contract.MAX_STATUS_BYTES and message.endswith("bytes, cut)")
    assert contract.short("x" * 500).endswith("(500 characters)") and contract.short("a\nb") == "a?b"


def test_both_services_default_to_the_contracts_limits(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("BRIDGE_", "WORKER_")):
            monkeypatch.delenv(name)
    bridge = bridge_config(["--worker", "127.0.0.1:1"])
    worker = worker_config(["--model", "mock_model"])
    shared = {
        "study bytes": (bridge.limits.max_body_bytes, worker.limits.max_study_bytes, limits.MAX_STUDY_BYTES),
        "parts": (bridge.limits.max_parts, worker.limits.max_parts, limits.MAX_PARTS),
        "part bytes": (bridge.limits.max_part_bytes, worker.limits.max_part_bytes, limits.MAX_PART_BYTES),
        "JSON bytes": (bridge.limits.max_json_bytes, worker.limits.max_json_bytes, limits.MAX_JSON_BYTES),
        "upload rate": (bridge.http.min_upload_rate, worker.min_receive_rate, limits.MIN_UPLOAD_RATE),
        "rate window": (bridge.http.body_timeout, worker.receive_window_seconds, limits.RATE_WINDOW_SECONDS),
        "message bytes": (dict(channel_options())["grpc.max_receive_message_length"],
                          worker.max_message_bytes, limits.MESSAGE_BYTES),
    }
    assert {name: len(set(values)) for name, values in shared.items()} == dict.fromkeys(shared, 1), shared
