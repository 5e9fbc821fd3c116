"""`python -m testtool` end to end: real worker and bridge processes, the tool run as users run it.

The tool's files are checked against an independent reading of the same answer (tests.http_helpers,
built on requests_toolbelt's decoder), the PNGs against renderings of the same images with nothing on
them, and its verdicts against a hand-made server that breaks the protocol on purpose.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mock_model import MockModel
from tests import http_helpers as http
from tests.dicom_factory import write_big_study, write_standard_study
from tests.services import ROOT, free_port, mock_stack
from testtool.loading import load_study
from testtool.render import write_pngs

SCRIPT = ROOT / "testtool" / "send-inference-request.sh"
SLICE_PNGS = "series*_slice*_frame*.png"
DICOM_COMMANDS = ("get-secondary-capture", "get-structured-report")
MASK_COMMANDS = ("get-probability-mask", "get-probability-mask-2d", "get-boolean-mask", "get-heatmap",
                 "get-label-mask")


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    """A study under a folder the worker may read with studyPath requests."""
    root = tmp_path_factory.mktemp("root")
    record = write_standard_study(root / "cases" / "case1")
    return root, record


@pytest.fixture(scope="module")
def study(study_root):
    return study_root[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, study_root):
    with mock_stack(tmp_path_factory.mktemp("stack"), study_root[0]) as services:
        yield services


@pytest.fixture(scope="module")
def blank_pngs(tmp_path_factory, study) -> Path:
    """Every input image rendered with no finding, under the names the tool gives its PNGs."""
    folder = tmp_path_factory.mktemp("blank")
    write_pngs(load_study(study.folder), {}, folder)
    return folder


def run_tool(port: int, *args: str, cwd: Path = ROOT, command: list[str] | None = None) -> subprocess.CompletedProcess:
    argv = (command or [sys.executable, "-m", "testtool"]) + ["--host", "127.0.0.1", "-p", str(port), *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def frame_count(study) -> int:
    return sum(instance.frames for instance in study.instances)


# ------------------------------------------------------------------------------------ every command


@pytest.mark.parametrize("command", MockModel.commands)
def test_every_mock_command(stack, study, blank_pngs, tmp_path, command):
    out = tmp_path / "out"
    run = run_tool(stack["port"], "-i", str(study.folder), "-o", str(out), "-c", command)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 protocol violations" in run.stdout
    assert "Binary parts" in run.stdout and "Series (findings drawn on the PNGs)" in run.stdout

    # response.json is the JSON that came back: compare with an independent request (same files, same
    # order: the worker lists series in the order they arrive) read by an independent decoder
    paths = [image.path for image in load_study(study.folder).images]
    direct = http.parse_answer(http.post_like_original_tool(stack["url"] + "/", {"inference_command": command}, paths))
    saved = json.loads((out / "response.json").read_text())
    assert saved == direct.json
    hashes_line = (out / "hashes.txt").read_text()
    assert len(hashes_line) == 129 and hashes_line[64] == ":"

    parts = saved["parts"]
    masks = sorted(out.glob("output_masks_*.npy"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    dicoms = sorted(out.glob("sc_*.dcm"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if command in DICOM_COMMANDS:
        assert not masks and len(dicoms) == len(parts) >= 1
        for path in dicoms:
            assert pydicom.dcmread(path).SOPInstanceUID
    else:
        assert not dicoms and len(masks) == len(parts)
        for path, part, binary in zip(masks, parts, direct.binaries, strict=True):
            shape = part["binary_data_shape"]
            expected = shape.get("timepoints", 1) * shape.get("depth", 1) * shape["height"] * shape["width"]
            assert path.stat().st_size == expected
            assert path.read_bytes() == binary  # raw bytes, no .npy header, as the original tool wrote them
    if command in ("get-probability-mask", "get-boolean-mask", "get-heatmap", "get-label-mask"):
        # one 3D mask per series, depth x rows x columns of that series
        expected_sizes = sorted(spec.count * spec.frames * spec.rows * spec.cols for spec in study.series)
        assert sorted(p.stat().st_size for p in masks) == expected_sizes

    pngs = sorted(p.name for p in out.glob(SLICE_PNGS))
    assert len(pngs) == frame_count(study) == 18
    assert pngs == sorted(p.name for p in blank_pngs.glob("*.png"))
    assert sorted(p.name for p in out.glob("series*_sheet.png")) == [f"series{n:02d}_sheet.png" for n in (1, 2, 3, 4)]
    assert (out / "index.html").is_file() and f"Report: {out / 'index.html'}" in run.stdout
    changed = [name for name in pngs if not np.array_equal(pixels(out / name), pixels(blank_pngs / name))]
    if command in MASK_COMMANDS:
        assert len(changed) >= 1, "no mask drawn on any PNG"
    if command == "get-probability-mask-2d":
        assert len(masks) == 18


def test_the_shell_script_from_another_directory(stack, study, tmp_path):
    shutil.copytree(study.folder, tmp_path / "my study")
    run = run_tool(stack["port"], "-i", "my study", "-b", command=[str(SCRIPT)], cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"inference_command": "get-bounding-box-2d"' in run.stdout
    saved = json.loads((tmp_path / "output" / "response.json").read_text())  # -o defaults to ./output
    assert len(saved["bounding_boxes_2d"]) == len(study.series)
    assert len(list((tmp_path / "output").glob(SLICE_PNGS))) == 18


def test_help_explains_every_flag():
    run = subprocess.run([sys.executable, "-m", "testtool", "-h"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0
    for flag in ("-i", "--host", "-p", "-o", "-a", "-c", "-S", "-r", "--request_options", "-l",
                 "--request_study_path", "--timeout", "-s", "-b", "-cl"):
        assert f"{flag} " in run.stdout or f"{flag}," in run.stdout, flag
    assert "without a .npy header" in run.stdout.replace("\n", " ").replace("WITHOUT", "without")


# ------------------------------------------------------------------------------------ request options


def test_attachments_options_and_study_size_reach_the_model(stack, study, tmp_path):
    licence = tmp_path / "licence.txt"
    licence.write_bytes(b"licence: test-only\n")
    out = tmp_path / "out"
    run = run_tool(stack["port"], "-i", str(study.folder), "-o", str(out), "-r", "/probe", "-a", str(licence), "-S",
                   "--request_options", "threshold=0.7", "count=3", "-c", "probe-it")
    assert run.returncode == 0, run.stdout + run.stderr
    seen = json.loads((out / "response.json").read_text())["study_ml_json"]
    assert seen["route"] == "/probe"
    assert seen["command"] == "probe-it"
    first = min(study.series, key=lambda s: s.series_uid)  # the tool sends series in SeriesNumber, then UID order
    assert seen["request"] == {"inference_command": "probe-it", "threshold": "0.7", "count": "3",
                               "depth": len(study.instances), "height": first.rows, "width": first.cols}
    assert seen["attachments"] == [{
        "index": seen["attachments"][0]["index"], "name": "1", "filename": "licence.txt",
        "content_type": "application/octet-stream", "sha256": hashlib.sha256(licence.read_bytes()).hexdigest(),
    }]
    assert sorted(i["sop_instance_uid"] for i in seen["instances"]) == sorted(
        i.sop_instance_uid for i in study.instances)
    # the model saw the input hash the tool computed over what it sent (the tool checked hashes.txt too)
    assert (out / "hashes.txt").read_text().split(":")[0] == seen["input_hash"]


def test_request_study_path(stack, study_root, tmp_path):
    root, study = study_root
    out = tmp_path / "out"
    run = run_tool(stack["port"], "-i", str(study.folder), "-o", str(out), "-c", "get-probability-mask",
                   "--request_study_path", "cases/case1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "studyPath 'cases/case1'" in run.stdout
    assert len(list(out.glob("output_masks_*.npy"))) == len(study.series)
    assert len(list(out.glob(SLICE_PNGS))) == 18


def test_an_error_answer_exits_2_with_the_message_the_request_id_and_a_report(stack, study, tmp_path):
    out = tmp_path / "out"
    run = run_tool(stack["port"], "-i", str(study.folder), "-o", str(out), "-c", "get-nothing")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "HTTP 400" in run.stderr
    assert "unknown inference_command 'get-nothing'" in run.stderr
    # The id the tool sent, printed so that both services' logs can be searched for it.
    request_id = re.search(r"request id (testtool-[0-9a-f]{12}): the bridge's and the worker's log lines about it "
                           r"carry request_id=\1", run.stderr)[1]
    for service in ("bridge", "worker"):
        assert f"request_id={request_id}" in stack[service].log(), service
    # The report is written all the same, with the error, and the study's images with nothing drawn.
    page = (out / "index.html").read_text()
    assert "unknown inference_command &#x27;get-nothing&#x27;" in page and request_id in page
    assert len(list(out.glob(SLICE_PNGS))) == 18
    assert f"Report: {out / 'index.html'}" in run.stderr


def test_no_server_exits_2_with_a_clear_message(study, tmp_path):
    run = run_tool(free_port(), "-i", str(study.folder), "-o", str(tmp_path / "out"), "--timeout", "5")
    assert run.returncode == 2
    assert "cannot reach http://127.0.0.1:" in run.stderr and "Is the bridge running" in run.stderr


def test_unreadable_files_are_reported_and_skipped(stack, study, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(study.folder, folder)
    (folder / "README.txt").write_text("notes about this study\n")
    run = run_tool(stack["port"], "-i", str(folder), "-o", str(tmp_path / "out"), "-c", "get-bounding-box-2d")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"skipped {folder / 'README.txt'}: a text file, not DICOM or a PNG/JPEG picture" in run.stdout
    assert "Sending 14 instance(s)" in run.stdout


# ------------------------------------------------------------------------------------ a server that breaks the rules


class _BrokenServer(BaseHTTPRequestHandler):
    answer: tuple[str, bytes] = ("", b"")

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        content_type, body = self.answer
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def broken_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_protocol_violation_is_caught_and_explained(broken_server, study, tmp_path):
    image = study.sorted_series(study.series[0].series_uid)[0]  # 32 rows x 48 columns
    spec = study.series[0]
    result = {"protocol_version": "1.0", "parts": [
        {"label": "short", "binary_type": "probability_mask", "binary_data_shape": {"width": 48, "height": 32},
         "dicom_image": {"SOPInstanceUID": image.sop_instance_uid}},
        {"label": "swapped", "binary_type": "boolean_mask", "SeriesInstanceUID": spec.series_uid,
         "binary_data_shape": {"timepoints": 1, "depth": spec.count, "width": spec.rows, "height": spec.cols}},
    ]}
    boundary = "canned"
    parts = [("application/json", json.dumps(result).encode()), ("application/binary", b"\x80" * 100),
             ("application/binary", b"\x01" * (spec.count * spec.rows * spec.cols)),
             ("text/plain", f"{'0' * 64}:{'1' * 64}".encode())]
    _BrokenServer.answer = (f"multipart/related; boundary={boundary}", http.hand_built_body(parts, boundary))
    out = tmp_path / "out"
    run = run_tool(broken_server.server_port, "-i", str(study.folder), "-o", str(out))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "4 protocol violation(s)" in run.stdout
    assert "needs 1536 bytes (one uint8 per voxel) but the binary has 100" in run.stdout
    assert "width x height is 32 x 48 but the series' images are 48 x 32" in run.stdout
    assert f"the input hash is {'0' * 64} but the parts this tool sent hash to" in run.stdout
    assert f"the output hash is {'1' * 64}" in run.stdout
    # the files are still written, and the drawing notes say why those masks are not drawn
    assert (out / "output_masks_1.npy").stat().st_size == 100
    assert "part 2 (swapped): height x width = 48x32, but the image has 32 rows x 48 columns (width and height " \
           "look swapped); not drawn" in run.stdout
    page = (out / "index.html").read_text(encoding="utf-8")  # the report says the same
    assert "4 protocol violation(s)" in page and "4 violation(s)" in page
    assert "needs 1536 bytes (one uint8 per voxel) but the binary has 100" in page
    assert "(width and height look swapped); not drawn" in page


# ---------------------------------------------------------------------------------- progress bars


def run_on_a_terminal(argv: list[str], timeout: float = 180) -> tuple[int, str]:
    """Runs argv with stdout and stderr on a pseudo-terminal, as a user at a shell sees it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 x 0
    process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    data = b""
                if not data:
                    break
                output += data
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), output.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


def test_progress_bars_on_a_terminal_and_none_in_a_pipe(stack, tmp_path):
    big = write_big_study(tmp_path / "big", 12 << 20, rows=512, cols=512)  # answer mask > 4 MiB: a download bar
    args = ["--host", "127.0.0.1", "-p", str(stack["port"]), "-i", str(big.folder), "-c", "get-probability-mask",
            "-o", str(tmp_path / "out")]
    code, screen = run_on_a_terminal([sys.executable, "-m", "testtool", *args])
    assert code == 0, screen
    assert "upload:" in screen and "download:" in screen, screen
    assert "B/s" in screen, screen  # sizes in bytes, not items

    piped = run_tool(stack["port"], "-i", str(big.folder), "-c", "get-probability-mask", "-o", str(tmp_path / "p"))
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "upload:" not in piped.stderr + piped.stdout and "download:" not in piped.stderr + piped.stdout

    quiet, screen = run_on_a_terminal([sys.executable, "-m", "testtool", *args, "-q"])
    assert quiet == 0, screen
    assert "upload:" not in screen and "download:" not in screen


def test_underscored_flags_of_the_original_tool_also_take_hyphens():
    from testtool.cli import build_parser

    common = ["-i", "study"]
    underscored = build_parser().parse_args(common + [
        "--inference_command", "x", "--send_study_size", "--request_options", "a=1", "--request_study_path", "/s",
        "--include_label_plots", "--bounding_box_model", "--output_formats", "dicom"])
    hyphenated = build_parser().parse_args(common + [
        "--inference-command", "x", "--send-study-size", "--request-options", "a=1", "--request-study-path", "/s",
        "--include-label-plots", "--bounding-box-model", "--output-formats", "dicom"])
    assert vars(underscored) == vars(hyphenated)
    assert underscored.model_type == "bounding_box" and underscored.request_options == ["a=1"]


def test_outline_draws_the_edge_of_the_masks_that_a_filled_run_fills(stack, study, tmp_path):
    runs = {}
    for mode in ("filled", "outline"):
        out = tmp_path / mode
        run = run_tool(stack["port"], "-i", str(study.folder), "-o", str(out), "-c", "get-boolean-mask",
                       *(["--outline"] if mode == "outline" else []))
        assert run.returncode == 0, run.stdout + run.stderr
        runs[mode] = out
    names = sorted(path.name for path in runs["filled"].glob(SLICE_PNGS))
    changed_somewhere = False
    for name in names:
        plain = runs["filled"] / "plain" / name
        if not plain.exists():
            continue
        base, filled, outlined = (pixels(path) for path in (plain, runs["filled"] / name, runs["outline"] / name))
        height = base.shape[0]  # the picture's panel (legend) lies below the image
        filled_pixels = (filled[:height] != base).any(axis=2)
        outline_pixels = (outlined[:height] != base).any(axis=2)
        assert not (outline_pixels & ~filled_pixels).any(), name  # an outline stays on the mask
        changed_somewhere |= outline_pixels.sum() < filled_pixels.sum()
        assert (plain.read_bytes() == (runs["outline"] / "plain" / name).read_bytes())  # the same image as sent
    assert changed_somewhere
