"""The identifying values of each instance's header are found only when a record needs them
(worker/serving/identifiers.py), and are then hidden in that record, whichever thread logs it.

Real DICOM files (tests/dicom_factory.py), the services' logging configuration, and for the whole call an
in-process worker on loopback. "Decoded" is counted: the calls of the source that reads a header."""

from __future__ import annotations

import contextvars
import gc
import io
import logging
import struct
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from service_runtime.logs import StudyNames, study_names_scope, use_study_names
from tests.conftest import serving
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import wait_for
from tests.test_logs import capture
from tests.worker_client import dicom_parts, infer
from worker import Model, Result
from worker.serving import identifiers

PATIENT = "Test^Patient"  # tests/dicom_factory.py's PatientName
PATIENT_NAME = pydicom.datadict.tag_for_keyword("PatientName")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("study"), [SeriesSpec("ct", rows=8, cols=8, count=3)])


@pytest.fixture
def headers(study) -> list[tuple[str, pydicom.Dataset]]:
    """(label, header) of each instance, read as the worker reads them (no pixel data)."""
    return [(f"part {number}", pydicom.dcmread(instance.path, stop_before_pixels=True))
            for number, instance in enumerate(study.instances, start=1)]


class Decoded(list):
    """The label of each header whose values were found, in the order they were; `pause` seconds are spent
    in each (the thread that finds them is suspended, as the interpreter may do at any point)."""

    pause = 0.0


@pytest.fixture
def decoded(monkeypatch) -> Decoded:
    labels = Decoded()
    find = identifiers._identifying_values

    def counted(label, header, names):
        labels.append(label)
        time.sleep(labels.pause)
        yield from find(label, header, names)

    monkeypatch.setattr(identifiers, "_identifying_values", counted)
    return labels


def said(headers) -> str:
    """A line naming every instance by its UIDs, and the patient."""
    return " ".join(f"{header.SOPInstanceUID} of series {header.SeriesInstanceUID} of {PATIENT}"
                    for _, header in headers)


def test_a_headers_values_are_found_when_a_record_first_needs_them_and_hidden_in_it(headers, decoded):
    stream = capture()
    log = logging.getLogger("a.model")
    with study_names_scope():
        for label, header in headers:
            identifiers.header_read(label, header)
        assert decoded == []
        log.info("reading %s", said(headers))
        log.info("again: %s", headers[1][1].SOPInstanceUID)
    text = stream.getvalue()
    assert decoded == ["part 1", "part 2", "part 3"]  # once each, for the first record
    for number in (1, 2, 3):
        assert f"<SOPInstanceUID of part {number}> of series <SeriesInstanceUID of part 1>" in text
    assert "<PatientName of part 1>" in text and "again: <SOPInstanceUID of part 2>" in text
    assert PATIENT not in text and "Test" not in text and headers[0][1].StudyInstanceUID not in text
    # Found without changing the header, which the model may be reading on another thread.
    assert isinstance(headers[0][1].get_item(PATIENT_NAME), RawDataElement)


def test_a_header_read_on_one_thread_is_hidden_in_records_of_others_each_read_once(headers, decoded):
    """Headers read on an I/O thread; records logged by eight threads (the event loop's, the model's, a
    library's), one after the other while the first is finding the values (each header takes it a pause):
    each record waits for them, whichever header is being read when it comes."""
    decoded.pause = 0.05
    stream = capture()
    log = logging.getLogger("a.model")
    with study_names_scope(), ThreadPoolExecutor(8) as threads:
        context = contextvars.copy_context()  # what the worker's threads run in: a copy of the call's context
        for label, header in headers:
            threads.submit(context.run, identifiers.header_read, label, header).result()
        together = threading.Barrier(8)

        def log_now(number: int) -> None:
            together.wait()
            time.sleep(number * decoded.pause / 2)
            log.info("thread %d: %s", number, said(headers))

        for done in [threads.submit(contextvars.copy_context().run, log_now, n) for n in range(8)]:
            done.result()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 and decoded == ["part 1", "part 2", "part 3"]
    for line in lines:
        assert "<SOPInstanceUID of part 3> of series <SeriesInstanceUID of part 1> of <PatientName of part 1>" in line
        assert "1.2." not in line.split("] ", 1)[1] and "Test" not in line


def test_a_batchs_names_find_each_studys_headers_only_when_a_record_needs_them(headers, decoded):
    stream = capture()
    each = []
    for label, header in headers[:2]:  # two studies of one instance each
        with study_names_scope() as names:
            identifiers.header_read(label, header)
            each.append(names)
    use_study_names(StudyNames.joined(each))
    try:
        assert decoded == []
        logging.getLogger("a.model").info("batch: %s", said(headers[:2]))
    finally:
        use_study_names(None)
    assert decoded == ["part 1", "part 2"]
    assert "batch: <SOPInstanceUID of part 1> of series <SeriesInstanceUID of part 1>" in stream.getvalue()
    assert "<SOPInstanceUID of part 2>" in stream.getvalue()


def test_a_value_its_vr_cannot_hold_is_hidden_as_its_bytes(study, decoded):
    """A hostile header: the PatientID declared as unsigned shorts, in an odd number of bytes, which pydicom
    refuses to decode. Nothing fails (the call does not need it), and a record quoting it hides it."""
    data = study.instances[0].path.read_bytes()
    at = data.index(struct.pack("<HH", 0x0010, 0x0020) + b"LO")
    length = struct.unpack("<H", data[at + 6:at + 8])[0]
    hostile = data[:at + 4] + b"US" + struct.pack("<H", 7) + b"HOSTILE" + data[at + 8 + length:]
    header = pydicom.dcmread(io.BytesIO(hostile), stop_before_pixels=True)
    with pytest.raises(Exception, match="even multiple"):
        _ = header.PatientID  # what pydicom makes of it
    stream = capture()
    with study_names_scope():
        identifiers.header_read("part 1", header)
        logging.getLogger("a.model").info("patient HOSTILE, image %s", header.SOPInstanceUID)
    assert "patient <PatientID of part 1>, image <SOPInstanceUID of part 1>" in stream.getvalue()


# ------------------------------------------------------------------------------------- a whole call


class Talkative(Model):
    """Says its first instance's UID and patient when the request asks it to; keeps weak references to the
    headers it was given, to see when they are freed."""

    name = "talkative_identifiers"

    def __init__(self) -> None:
        self.headers: list[weakref.ref] = []

    def infer(self, study):
        self.headers = [weakref.ref(instance.header) for instance in study.instances]
        if study.request.get("talk"):
            first = study.instances[0]
            logging.getLogger("a.model").warning("reading %s of %s", first.sop_instance_uid,
                                                 first.header.get("PatientName"))
        return Result(study_ml_json={"instances": len(study.instances)})


def freed(references: list[weakref.ref]) -> bool:
    gc.collect()
    return not any(reference() for reference in references)


def test_a_call_that_logs_nothing_reads_no_header_and_keeps_none_after_it(study, decoded):
    stream = capture()
    model = Talkative()
    parts = dicom_parts([instance.path for instance in study.instances])
    with serving(model) as (_server, _channel, stub):
        assert infer(stub, {}, parts).json["study_ml_json"]["instances"] == 3
        assert decoded == []
        wait_for(lambda: freed(model.headers), what="the call's headers to be freed")
        answer = infer(stub, {"talk": True}, parts)
    assert answer.json["study_ml_json"]["instances"] == 3 and len(decoded) == 3
    uid = pydicom.dcmread(study.instances[0].path, stop_before_pixels=True).SOPInstanceUID
    line = next(line for line in stream.getvalue().splitlines() if "a.model" in line)
    assert line.endswith("reading <SOPInstanceUID of part 1> of <PatientName of part 1>"), line
    assert uid not in stream.getvalue()
