"""logging.yaml and the request tags: every line about a request carries its input hash, no leaks."""

from __future__ import annotations

import io
import logging
import threading

from contract.logs import (
    REQUEST_ID_LENGTH,
    TaggedLogger,
    clean_request_id,
    configure_logging,
    request_tags,
    set_tags,
)


def capture() -> io.StringIO:
    configure_logging()
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)
    return stream


def test_lines_inside_a_request_carry_its_tags_and_others_do_not():
    stream = capture()
    log = logging.getLogger("any.library")
    with request_tags(request_id="r1"):
        log.info("receiving")
        set_tags(input_hash="a" * 64)
        log.info("inferring")
    log.info("idle")
    lines = stream.getvalue().splitlines()
    assert "[input_hash=- request_id=r1 trace_id=-] receiving" in lines[0]
    assert f"[input_hash={'a' * 64} request_id=r1 trace_id=-] inferring" in lines[1]
    assert "[input_hash=- request_id=- trace_id=-] idle" in lines[2]


def test_lines_of_a_traced_request_carry_its_trace_id():
    stream = capture()
    log = logging.getLogger("worker.inference")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with request_tags(request_id="r2", trace_id=trace_id):
        set_tags(input_hash="b" * 64)
        log.info("inferring")
    log.info("idle")
    lines = stream.getvalue().splitlines()
    assert f"[input_hash={'b' * 64} request_id=r2 trace_id={trace_id}] inferring" in lines[0]
    assert "[input_hash=- request_id=- trace_id=-] idle" in lines[1]


def test_tags_do_not_leak_between_concurrent_requests():
    stream = capture()
    log = logging.getLogger("worker.inference")
    barrier = threading.Barrier(2)

    def request(name: str) -> None:
        with request_tags(input_hash=name * 64, request_id=name):
            barrier.wait()
            log.info("from %s", name)

    threads = [threading.Thread(target=request, args=(n,)) for n in "bc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # both captured: a check over no lines would pass whatever the tags
    for line in lines:
        name = line.rsplit(" ", 1)[1]
        assert f"input_hash={name * 64} request_id={name} trace_id=-]" in line


def test_the_original_sdks_tagged_logger_still_works():
    stream = capture()
    tagged = TaggedLogger(logging.getLogger("inference"))
    tagged.add_tags({"input_hash": "f" * 64})
    tagged.info("start processing")
    assert f"[input_hash={'f' * 64} request_id=- trace_id=-] start processing" in stream.getvalue()


def test_request_ids_are_kept_only_when_short_printable_ascii_without_spaces():
    assert clean_request_id("abc-123_X") == "abc-123_X"
    assert clean_request_id("a" * REQUEST_ID_LENGTH) == "a" * REQUEST_ID_LENGTH
    for bad in ("", "a" * (REQUEST_ID_LENGTH + 1), "two words", "line\nbreak", "caf\u00e9", "tab\there"):
        replaced = clean_request_id(bad)
        assert replaced != bad and len(replaced) == 12 and replaced.isalnum()
    assert clean_request_id("") != clean_request_id("")  # a fresh id each time
