"""No patient identifier reaches either service's log (issue 18, row 7 and deliverable 3), against real
`python -m bridge` and `python -m worker` processes.

Every identifying value of the studies sent carries a marker: every PN, LO and SH value (the patient's name
also a line break and a forged log line), every UID (study, series, instance, frame of reference: digits
only, so a marker of digits), every file name as the original test tool sends it, every folder and file name
of a studyPath. The studies go through every mock command with DICOM outputs, a studyPath, a batch, and
every refusal that names a part: not DICOM, cut short, the same instance twice, pixel data shorter than
declared, NaN geometry, no SOPInstanceUID, an image too large, a part too large (at the worker and at the
bridge), a series mixing image sizes, each studyPath refusal; and a model that says every identifier it knows
in its log lines, its refusals and its exceptions. Neither log may hold a marker, and every line is in our
format. Answers name parts by number (the test tool adds its file names); a model's own refusal goes back
to the client as the model wrote it.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import UID_dictionary

from mock_model.model import MockModel
from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_study
from tests.otlp_collector import Collector
from tests.services import ROOT, start_bridge, start_worker

MARKER = "Zq7Mark"  # in every text value, file name and folder name
UID_MARKER = "731739"  # in every UID (UIDs are digits and dots)
FORGED = "\n2026-12-07 01:00:00,000 ERROR worker.inference [input_hash=- request_id=- trace_id=-] FORGED"
NAMES = ("PatientName", "ReferringPhysicianName", "OperatorsName", "PerformingPhysicianName", "PatientID",
         "StudyDescription", "SeriesDescription", "InstitutionName", "Manufacturer", "AccessionNumber", "StudyID",
         "StationName", "OtherPatientIDs", "PatientComments")
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \[input_hash=\S+ request_id=\S+ trace_id=\S+\] ")
UID_ROOT = f"1.2.826.0.1.3680043.10.{UID_MARKER}"
# Every study's header values are marked, and so is each of its files' name.
MARKED_FILE = f"{MARKER}_DOE_JOHN_{{index}}.dcm"


def marked_uid(kind: int, *numbers: int) -> str:
    return ".".join([UID_ROOT, str(kind), *map(str, numbers)])


def mark(ds: pydicom.Dataset, index: int, series: int, study: int = 1) -> None:
    """Every PN, LO and SH value of `ds` (present or added) carries MARKER, the patient's name also a line break
    and a forged log line, as in the issue; every UID that is not the standard's own carries UID_MARKER."""
    for name in NAMES:
        setattr(ds, name, "")
    for element in ds.iterall():
        if element.VR == "PN":
            element.value = f"{MARKER}^Name{index}"
        elif element.VR in ("LO", "SH"):
            element.value = f"{MARKER}{index}"[:16]
    ds.PatientName = f"Evil{MARKER}{FORGED}"
    ds.StudyInstanceUID = marked_uid(1, study)
    ds.SeriesInstanceUID = marked_uid(2, study, series)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = marked_uid(3, study, series, index)
    ds.FrameOfReferenceUID = marked_uid(4, study, series)
    left = [e.keyword for e in ds.iterall() if e.VR == "UI" and e.value and str(e.value) not in UID_dictionary
            and UID_MARKER not in str(e.value)]
    assert not left, f"UIDs without the marker: {left}"


def marked_study(folder: Path, specs: list[SeriesSpec], study: int = 1) -> list[Path]:
    """A study written by tests/dicom_factory.py, marked, each file renamed to a marked name; its paths."""
    record = write_study(folder / "unmarked", specs)
    series = {spec.series_uid: number for number, spec in enumerate(specs, start=1)}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, instance in enumerate(record.instances, start=1):
        ds = pydicom.dcmread(instance.path)
        mark(ds, index, series[instance.series_instance_uid], study)
        path = folder / MARKED_FILE.format(index=index)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    shutil.rmtree(folder / "unmarked")
    return paths


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def assert_no_marker_and_one_line_per_record(*services) -> None:
    for service in services:
        log = service.log()
        leaks = [line for line in log.splitlines() if MARKER in line or UID_MARKER in line or "FORGED" in line]
        assert leaks == [], "\n".join(leaks[:20])
        assert [line for line in log.splitlines() if not RECORD.match(line)] == []


@pytest.fixture
def services(tmp_path):
    """Starts a worker and a bridge logging at every level (LOG_LEVEL=DEBUG): no level may carry an identifier."""
    started = []

    def start(model: str = "tests.models:TalkativeModel", worker_args=(), bridge_args=()):
        worker = start_worker(tmp_path, model, *worker_args, env={"LOG_LEVEL": "DEBUG"})
        started.append(worker)
        bridge = start_bridge(tmp_path, worker.address, *bridge_args, env={"LOG_LEVEL": "DEBUG"})
        started.append(bridge)
        return worker, bridge, f"http://{bridge.address}/"

    yield start
    for service in reversed(started):
        service.stop()


@pytest.mark.filterwarnings("ignore:The number of PN components")
def test_no_identifier_of_a_study_reaches_a_log_through_every_command_a_study_path_and_a_batch(tmp_path, services):
    paths = marked_study(tmp_path / "sent", [SeriesSpec("ct", rows=32, cols=32, count=3),
                                             SeriesSpec("mr", rows=24, cols=20, count=2, modality="MR")])
    root = tmp_path / "root"
    folder = root / f"{MARKER}_DOE_JOHN" / f"{MARKER}_series"
    folder.mkdir(parents=True)
    for path in paths:
        shutil.copy(path, folder / path.name)
    worker, bridge, url = services(worker_args=("--study-root", str(root)))
    for command in MockModel.commands:
        request = {"inference_command": command, "output_formats": ["arterys", "dicom"]}
        response = http.post_like_original_tool(url, request, paths, timeout=120)
        assert response.status_code == 200, (command, response.text[:500])
        response = requests.post(url, json={**request, "studyPath": f"{MARKER}_DOE_JOHN"}, timeout=120)
        assert response.status_code == 200, (command, response.text[:500])
    assert_no_marker_and_one_line_per_record(worker, bridge)
    assert " DEBUG " in worker.log() and " DEBUG " in bridge.log()
    assert "INFO talkative" in worker.log() and "<file name of part 1> of <PatientName of part 1>" in worker.log()
    # The library warnings that quoted the name (highdicom's about a one-component PN) carry their request's tags.
    warnings = [line for line in worker.log().splitlines() if "py.warnings" in line]
    assert warnings and all("request_id=-" not in line for line in warnings), warnings

    worker, bridge, url = services("tests.models:TalkativeBatchingModel")
    second = marked_study(tmp_path / "second", [SeriesSpec("ct", rows=16, cols=16, count=2)], study=2)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda sent: http.post_like_original_tool(
            url, {"inference_command": "get-bounding-box-2d"}, sent, timeout=120), (paths, second)))
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text[:300] for answer in answers]
    batch = [line for line in worker.log().splitlines() if "a batch of" in line]
    assert len(batch) == 1 and batch[0].count("<file name of part 1>") == 2, batch  # one of each study
    assert_no_marker_and_one_line_per_record(worker, bridge)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS", "ignore:The number of PN components")
def test_no_identifier_reaches_a_log_through_any_refusal_naming_a_part(tmp_path, services):
    good = marked_study(tmp_path / "sent", [SeriesSpec("ct", rows=16, cols=16, count=3)])
    worker, bridge, url = services(worker_args=("--max-part-bytes", "60000", "--study-root", str(tmp_path / "root")),
                                   bridge_args=("--max-part-bytes", "90000"))
    names = iter(range(100, 1000))

    def file(data: bytes) -> Path:
        path = tmp_path / "sent" / MARKED_FILE.format(index=next(names))
        path.write_bytes(data)
        return path

    def changed(**values) -> Path:
        ds = pydicom.dcmread(good[0])
        for keyword, value in values.items():
            setattr(ds, keyword, value) if value is not None else delattr(ds, keyword)
        return file(dicom_bytes(ds))

    def refused(status: int, files: list[Path], needle: str, command: str = "get-probability-mask",
                **request) -> str:
        response = http.post_like_original_tool(url, {"inference_command": command, **request}, files, timeout=60)
        assert response.status_code == status, response.text[:500]
        message = response.json()["error"]["message"]
        assert needle in message, message
        return message

    short_pixels = pydicom.dcmread(good[0])
    short_pixels.PixelData = short_pixels.PixelData[:100]
    mixed = pydicom.dcmread(good[1])
    mixed.Rows, mixed.Columns = 8, 8
    mixed.PixelData = bytes(8 * 8 * 2)
    messages = [
        refused(400, [good[0], file(b"not DICOM: " * 50)], "part 2 is sent as application/dicom but is not"),
        refused(400, [good[0], file(good[1].read_bytes()[:600])], "part 2 "),
        refused(400, [good[0], good[1], file(good[0].read_bytes())], "part 1 and part 3 are the same instance"),
        refused(400, [file(dicom_bytes(short_pixels))], "part 1 declares 16 x 16"),
        refused(400, [good[0], changed(ImagePositionPatient=["0", "NaN", "0"])],
                "part 2: ImagePositionPatient holds NaN", "get-linear-measurements"),
        refused(400, [changed(SOPInstanceUID=None)], "part 1 has no SOPInstanceUID"),
        refused(413, [changed(Rows=65535, Columns=65535)], "part 1 declares 65535 x 65535"),
        refused(413, [good[0], file(good[1].read_bytes() + bytes(70000))], "part 2 exceeds 60000 bytes"),
        refused(413, [good[0], file(good[1].read_bytes() + bytes(100000))], "part 2 exceeds 90000 bytes"),
        refused(400, [good[0], file(dicom_bytes(mixed))], "mixes image sizes: part 2 is 8 x 8 pixels but part 1"),
    ]
    assert not [message for message in messages if MARKER in message or UID_MARKER in message], messages
    # A model's own words go back to the client as it wrote them (the client sent those values); its log has
    # none of them.
    for talk, status in (("refuse", 400), ("unsupported", 422)):
        assert MARKER in refused(status, good, "", talk=talk)
    assert "the model failed on this study" in refused(500, good, "", talk="crash")

    root = tmp_path / "root"
    outside = tmp_path / f"{MARKER}_outside"
    outside.mkdir()
    for name in ("empty", "notdicom", "dup", "linkout"):
        (root / f"{MARKER}_{name}").mkdir(parents=True)
    (root / f"{MARKER}_notdicom" / f"{MARKER}_readme.txt").write_text("not DICOM")
    for index in (1, 2):
        shutil.copy(good[0], root / f"{MARKER}_dup" / MARKED_FILE.format(index=index))
    (root / f"{MARKER}_loop").symlink_to(root / f"{MARKER}_loop")
    (root / f"{MARKER}_linkout" / f"{MARKER}_out").symlink_to(outside)
    for path, status, needle in ((f"{MARKER}_missing", 404, "is not a folder"),
                                 (f"../{MARKER}_outside", 403, "lies outside the study root"),
                                 (f"{MARKER}_loop", 400, "cannot be read"),
                                 (f"{MARKER}_empty", 404, "holds no file"),
                                 (f"{MARKER}_notdicom", 404, "holds no DICOM file"),
                                 (f"{MARKER}_dup", 400, "file 1 of the studyPath folder and file 2 of the studyPath "
                                                        "folder are the same instance"),
                                 (f"{MARKER}_linkout", 403, "a link in the studyPath folder leads outside")):
        response = requests.post(url, json={"studyPath": path, "inference_command": "get-classification"},
                                 timeout=60)
        assert response.status_code == status, (path, response.text[:500])
        message = response.json()["error"]["message"]
        assert needle in message and MARKER not in message, message
    assert_no_marker_and_one_line_per_record(worker, bridge)
    # What the worker says instead of the values, so that its lines still say what happened.
    # (The patient ID is named after the first attribute holding its value: AccessionNumber, marked alike.)
    assert re.search(r"inference failed \(INVALID_ARGUMENT\): cannot read <file name of part 1> of <PatientName of "
                     r"part 1> \(<\w+ of part 1>\), study <StudyInstanceUID of part 1>, series <SeriesInstanceUID "
                     r"of part 1>, image <SOPInstanceUID of part 1>", worker.log())
    assert "the worker (" in bridge.log() and "bad_request (the worker's log has why)" in bridge.log()


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS", "ignore:The number of PN components")
def test_the_test_tool_names_the_files_behind_part_numbers(tmp_path, services):
    """The services name parts by number only; the test tool, which knows what it sent, adds the file."""
    folder = tmp_path / "study"
    sent = marked_study(folder, [SeriesSpec("ct", rows=16, cols=16, count=3)])
    ds = pydicom.dcmread(sent[1])
    ds.ImagePositionPatient = ["0", "NaN", "0"]
    ds.save_as(sent[1], enforce_file_format=True)
    _, bridge, _ = services("mock_model")
    run = subprocess.run([sys.executable, "-m", "testtool", "--host", "127.0.0.1", "-p", str(bridge.port), "-i",
                          str(folder), "-c", "get-linear-measurements", "-o", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr  # an HTTP error answer
    assert re.search(rf"HTTP 400 Bad Request: part \d \({re.escape(str(sent[1]))}\): ImagePositionPatient holds NaN",
                     run.stderr), run.stderr


@pytest.mark.filterwarnings("ignore:The number of PN components")
def test_a_models_exception_on_a_trace_span_is_as_the_log_shows_it(tmp_path):
    """With tracing on, the exception a stage span records (a model's, quoting its study) is the log's text."""
    sent = marked_study(tmp_path / "sent", [SeriesSpec("ct", rows=16, cols=16, count=2)])
    with Collector() as collector:
        worker = start_worker(tmp_path, "tests.models:TalkativeModel", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
        bridge = start_bridge(tmp_path, worker.address)
        try:
            response = http.post_like_original_tool(f"http://{bridge.address}/", {"talk": "crash"}, sent, timeout=60)
            assert response.status_code == 500, response.text
            collector.wait_for(lambda spans: any(s.service == "arterys-worker" and "exception" in s.events
                                                 for s in spans))
        finally:
            bridge.stop()
            worker.stop()
    recorded = [attributes for span in collector.snapshot() for attributes in span.event_attributes]
    assert any("crashed on <file name of part 1> of <PatientName of part 1>" in str(a.get("exception.message"))
               and "<SOPInstanceUID of part 1>" in str(a.get("exception.stacktrace")) for a in recorded), recorded
    assert not [a for a in recorded if MARKER in str(a) or UID_MARKER in str(a)], recorded
    assert_no_marker_and_one_line_per_record(worker, bridge)
