"""logging.yaml and the request tags: every line about a request carries its input hash, no leaks."""

from __future__ import annotations

import io
import logging
import threading
import time
import warnings

from service_runtime.logs import (
    REQUEST_ID_LENGTH,
    StudyNames,
    TaggedLogger,
    clean_request_id,
    configure_logging,
    request_tags,
    set_tags,
    study_names_scope,
    use_study_names,
)
from service_runtime.native_log import NativeLogReader, RateLimit
from worker.serving.handshakes import HandshakeWatch


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


# ------------------------------------------------------------------------- one record, one line (issue 18)

FORGED = "Evil\n2026-12-07 01:00:00,000 ERROR worker.inference [input_hash=- request_id=- trace_id=-] FORGED"
HIDDEN = f"<{len(FORGED)} characters>"


def test_no_value_can_start_a_line_of_its_own():
    stream = capture()
    log = logging.getLogger("worker.inference")
    log.info("patient %s\r\x1b[2K\u2028done", FORGED)
    try:
        raise ValueError(FORGED)
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # the traceback is on its record's line
    assert "Evil\\n2026-12-07 01:00:00,000 ERROR" in lines[0] and "\\r\\x1b[2K\\u2028done" in lines[0]
    assert " ERROR worker.inference [input_hash=- request_id=- trace_id=-] failed\\nTraceback" in lines[1]
    assert lines[1].endswith("ValueError: Evil\\n2026-12-07 01:00:00,000 ERROR worker.inference [input_hash=- "
                             "request_id=- trace_id=-] FORGED")


def test_library_warnings_are_records_with_the_requests_tags_and_without_study_values():
    stream = capture()
    with request_tags(request_id="w1"), warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # pytest records warnings itself: route them to logging again, as
        logging.captureWarnings(True)  # configure_logging does in the services
        warnings.warn(f'The string "{FORGED}" is unlikely to represent the intended person name', UserWarning,
                      stacklevel=1)
        logging.getLogger("pydicom").warning("Invalid value for VR PN: '%s'", FORGED)
        logging.getLogger("mymodel").warning("kept as it is: '%s'", "a model's own line")
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == 3, lines
    assert all("request_id=w1" in line for line in lines)
    assert "WARNING py.warnings" in lines[0] and f"The string {HIDDEN} is unlikely" in lines[0]
    assert f"Invalid value for VR PN: {HIDDEN}" in lines[1]
    assert "Evil" not in lines[0] + lines[1] and "'a model's own line'" in lines[2]


def test_text_marked_as_study_data_is_hidden_in_the_message_and_the_traceback():
    stream = capture()
    try:
        raise ValueError(f"Value '{FORGED}' is too long")
    except ValueError as error:
        logging.getLogger("worker.inference").error("export failed: %s", error, exc_info=error,
                                                    extra={"study_data": True})
    assert "Evil" not in stream.getvalue()
    assert stream.getvalue().count(f"Value {HIDDEN} is too long") == 2


def test_a_requests_study_identifiers_are_named_in_every_record_of_the_request_and_only_there():
    stream = capture()
    log = logging.getLogger("a.model")
    with request_tags(request_id="r3"), study_names_scope() as names:
        names.add("DOE_JOHN.dcm", "file name of part 3")
        names.add("1.2.840.99.7", "SeriesInstanceUID of part 3")
        names.add("1.2.840.99.7.1", "SOPInstanceUID of part 3")
        names.add("data", "a folder name of the studyPath")
        names.add("CT1", "name of part 2")  # too short to be identifying: kept
        try:
            raise KeyError("no image 1.2.840.99.7.1 in DOE_JOHN.dcm")
        except KeyError as error:
            log.error("reading /spool/DOE_JOHN.dcm: series %s, image %s; 1.2.840.99.71 and metadata in data/CT1",
                      "1.2.840.99.7", "1.2.840.99.7.1", exc_info=error)
    log.info("after: DOE_JOHN.dcm")
    text = stream.getvalue()
    assert ("reading /spool/<file name of part 3>: series <SeriesInstanceUID of part 3>, image <SOPInstanceUID of "
            "part 3>; 1.2.840.99.71 and metadata in <a folder name of the studyPath>/CT1") in text
    assert "KeyError: 'no image <SOPInstanceUID of part 3> in <file name of part 3>'" in text  # the traceback
    assert text.count("DOE_JOHN") == 1 and text.splitlines()[-1].endswith("after: DOE_JOHN.dcm")


def test_a_sources_values_are_found_once_when_a_record_needs_them_whatever_the_source_does():
    """Sources (worker/serving/identifiers.py gives one per DICOM header) are read when the first record is
    checked, in order: one that logs while it runs (a library's warning) is not read again for its own record;
    one that raises costs its remaining values, not the logging call nor the sources after it."""
    stream = capture()
    read = []

    def source(*pairs, warn=False, fail=False):
        def values(names):
            read.append(pairs)
            if warn:
                logging.getLogger("pydicom").warning("odd value: '%s'", "LIBRARY_QUOTED")
            yield from pairs
            if fail:
                raise ValueError("a bug")
        return values

    with request_tags(request_id="r4"), study_names_scope() as names:
        names.add("DOE_JOHN.dcm", "file name of part 1")
        names.add_source(source(("1.2.840.99.1", "SOPInstanceUID of part 1"), warn=True))
        names.add_source(source(("BROKEN_ONE", "PatientID of part 2"), fail=True))
        names.add_source(source(("1.2.840.99.3", "SOPInstanceUID of part 3"), ("SMITH^ANN", "PatientName of part 3")))
        assert names and read == []
        logging.getLogger("a.model").info("DOE_JOHN.dcm 1.2.840.99.1 BROKEN_ONE 1.2.840.99.3 SMITH^ANN")
        logging.getLogger("a.model").info("again 1.2.840.99.3")
    lines = stream.getvalue().splitlines()
    assert len(read) == 3, read
    assert "WARNING pydicom [input_hash=- request_id=r4 trace_id=-] odd value: <14 characters>" in lines[0]
    assert "ERROR service_runtime.logs" in lines[1] and "failed (ValueError)" in lines[1]
    assert lines[2].endswith("<file name of part 1> <SOPInstanceUID of part 1> <PatientID of part 2> "
                             "<SOPInstanceUID of part 3> <PatientName of part 3>"), lines[2]
    assert lines[3].endswith("again <SOPInstanceUID of part 3>") and len(lines) == 4


def test_the_names_of_a_batch_are_those_of_each_of_its_studies():
    stream = capture()
    each = []
    for number in (1, 2):
        with study_names_scope() as names:
            names.add(f"PATIENT_{number}.dcm", "file name of part 1")
            each.append(names)
    use_study_names(StudyNames.joined([*each, None]))
    try:
        logging.getLogger("a.model").info("batch: PATIENT_1.dcm, PATIENT_2.dcm")
    finally:
        use_study_names(None)
    assert "batch: <file name of part 1>, <file name of part 1>" in stream.getvalue()


def test_uncaught_exceptions_of_threads_are_records():
    stream = capture()
    thread = threading.Thread(target=lambda: 1 / 0, name="worker-thread")
    thread.start()
    thread.join()
    assert "CRITICAL uncaught" in stream.getvalue() and "ZeroDivisionError" in stream.getvalue()


# -------------------------------------------------------------------------------- native lines (gRPC core)


def absl(severity: str, source: str, message: str) -> bytes:
    return f"{severity}1207 02:18:49.569008   22444 {source}] {message}\n".encode()


def test_native_lines_become_records_rate_limited_per_source():
    stream = capture()
    reader = NativeLogReader(-1)
    reader.limit = RateLimit(limit=3, window=60)
    for index in range(5):
        reader.feed(absl("I", "ssl_transport_security.cc:2563", f"Handshake failed {index}"))
    reader.feed(absl("E", "chttp2_server.cc:10", "a message\nthat spans lines"))
    reader.flush()
    lines = stream.getvalue().splitlines()
    assert [line.rsplit("] ", 1)[1] for line in lines] == [
        "Handshake failed 0", "Handshake failed 1", "Handshake failed 2", "a message\\nthat spans lines"]
    assert "INFO grpc.core" in lines[0] and "ERROR grpc.core" in lines[3]
    reader.tick(time.monotonic() + 61)
    assert "2 more line(s) like ssl_transport_security.cc:2563 in the last 60 s were not logged" in stream.getvalue()


TRACE = ("CallNextHandshakerLocked: error=UNKNOWN: Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
         "error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE: Invalid certificate "
         "verification context: OK\n shutdown=false index=2, args={endpoint=0x7f, args={grpc.internal."
         "endpoint_local_address=ipv4:127.0.0.1:50051, grpc.internal.endpoint_peer_address=ipv4:10.1.2.3:{port}, "
         "grpc.resource_quota=0x5}, read_buffer.Length()=0, exit_early=0}")


def test_failed_handshakes_name_their_peer_a_few_times_a_minute():
    stream = capture()
    watch = HandshakeWatch(RateLimit(limit=2, window=60))
    reader = NativeLogReader(-1)
    reader.watches.append(watch)
    reader.feed(absl("I", "handshaker.cc:155", TRACE.replace("error=UNKNOWN", "error=OK", 1).replace("{port}", "1")))
    for port in range(2, 7):
        reader.feed(absl("I", "ssl_transport_security.cc:2563", "Handshake failed with error SSL_ERROR_SSL"))
        reader.feed(absl("I", "handshaker.cc:155", TRACE.replace("{port}", str(port))))
    reader.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # gRPC's peerless lines and the trace itself are not logged
    assert "WARNING worker.handshake" in lines[0]
    assert lines[0].endswith("a handshake from ipv4:10.1.2.3:2 failed: UNKNOWN: Ssl handshake failed "
                             "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000c0:SSL routines:OPENSSL_internal:"
                             "PEER_DID_NOT_RETURN_A_CERTIFICATE: Invalid certificate verification context")
    watch.tick(time.monotonic() + 61)
    assert "3 more handshake(s) failed in the last 60 s, from ipv4:10.1.2.3 (3)" in stream.getvalue()
