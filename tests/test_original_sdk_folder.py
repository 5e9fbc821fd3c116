"""A handler module in the original SDK's own layout, ported with zero edits: its folder copied as it is.

tests/original_sdk_folder/ is such a folder: liver_server.py (the handler module, written as the SDK's README
said: `from utils import tagged_logger`, logging.yaml loaded with dictConfig at import, `from gateway import
Gateway`, `from flask import make_response`, `pydicom.read_file`), gateway.py (the Flask gateway), utils/,
logging.yaml and requirements.txt. The worker runs in a copy of it with the SDK on PYTHONPATH, as after
`pip install`. The model's dictConfig must not silence the worker (the original logging.yaml disables every
existing logger), its own loggers must still log (through the worker's handler, with the request's tags), and
a folder missing one of the SDK's pieces must fail in one line that names the porting guide.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.services import ROOT, start_bridge, start_worker
from testtool.sample_study import write_sample_study

FOLDER = ROOT / "tests" / "original_sdk_folder"
MODEL = "liver_server:request_handler"
SDK_ON_PATH = {"PYTHONPATH": str(ROOT)}  # the SDK installed; the handler's folder is the working directory
LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>\S+) \[input_hash=(?P<hash>\S+) request_id=\S+ "
                  r"trace_id=\S+\] (?P<message>.*)$")


def copy_folder(tmp_path: Path, leave_out: str = "") -> Path:
    folder = tmp_path / "liver-model"
    shutil.copytree(FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__", *([leave_out] if leave_out else [])))
    return folder


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample_study(tmp_path_factory.mktemp("sample") / "study")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("original-folder")
    folder = copy_folder(tmp)
    worker = start_worker(tmp, MODEL, "--default-command", "get-probability-mask", env=SDK_ON_PATH, cwd=folder)
    bridge = start_bridge(tmp, worker.address)
    yield folder, worker, bridge
    bridge.stop()
    worker.stop()


def run_testtool(bridge, study: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testtool", "-i", str(study), "-p", str(bridge.port), "-o", str(out),
                           "-q", *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)


def liver_window(sample) -> np.ndarray:
    """The handler's rule, computed here from the files: liver parenchyma, 55 to 75 HU, slices from the feet."""
    slices = sorted((pydicom.dcmread(path) for path in sample.files), key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices])
    return ((hu >= 55) & (hu <= 75)).astype(np.uint8) * 255


def worker_lines(worker) -> list[dict]:
    return [match.groupdict() for line in worker.log().splitlines() if (match := LINE.match(line))]


def test_the_folder_ports_unchanged_and_its_mask_reaches_the_viewer(stack, sample, tmp_path):
    folder, worker, bridge = stack
    for path in FOLDER.rglob("*"):  # zero edits: the worker runs the very files of the folder
        if path.is_file() and "__pycache__" not in path.parts:
            assert (folder / path.relative_to(FOLDER)).read_bytes() == path.read_bytes()

    result = run_testtool(bridge, sample.folder, tmp_path / "out", "-c", "get-probability-mask")

    assert result.returncode == 0, result.stdout + result.stderr
    mask = np.fromfile(tmp_path / "out" / "output_masks_1.npy", dtype=np.uint8)
    expected = liver_window(sample)
    assert expected.any() and mask.tobytes() == expected.tobytes()


def test_the_models_dictconfig_leaves_the_worker_logging_and_its_own_loggers_work(stack, sample, tmp_path):
    folder, worker, bridge = stack
    assert run_testtool(bridge, sample.folder, tmp_path / "ok", "-c", "get-bounding-box-2d").returncode == 0
    # An attachment is the handler's dicom_instances[0] (as in the original gateway): read_file fails, 500.
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM")
    failed = run_testtool(bridge, sample.folder, tmp_path / "failed", "-a", str(notes))
    assert failed.returncode == 2 and "HTTP 500" in failed.stderr, failed.stderr

    lines = worker_lines(worker)
    log = worker.log()
    # The worker's lines before and after the model's import, all in the worker's own format (logging.yaml).
    warned = [line for line in lines if line["message"].startswith("the model's import of liver_server "
                                                                    "reconfigured logging")]
    assert len(warned) == 1 and warned[0]["level"] == "WARNING", log
    assert "disabled" in warned[0]["message"] and "(worker, " in warned[0]["message"]
    assert any(line["logger"] == "worker" and "loaded; serving" in line["message"] for line in lines), log
    # The model's loggers: through the worker's handler, tagged with the request's hash; the original
    # TaggedLogger's own prefix is kept as it wrote it.
    received = [line for line in lines if line["logger"] == "inference" and "liver model received" in line["message"]]
    assert len(received) >= 2, log  # the module's earlier requests too
    for line in received:
        assert line["message"].startswith(f'{{"input_hash": "{line["hash"]}"}} - '), line
    assert any(line["logger"] == "inference" and re.search(r"liver found in \d+ of 24 slices", line["message"])
               for line in lines), log
    # Errors still reach the log, with the failing request's hash.
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert errors and all(line["hash"] != "-" for line in errors), log
    # The model's own root handler (stdout, its format) and DEBUG level were not kept.
    assert not re.search(r"^\[[^]]+\] \[(INFO|DEBUG)\] ", log, re.M), log
    assert not any(line["level"] == "DEBUG" for line in lines), log


def start_failing(folder: Path, *extra: str, cwd: Path | None = None, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "worker", "--model", MODEL, "--listen", "127.0.0.1:0", *extra],
                            cwd=cwd or folder, env={**SDK_ON_PATH, **(env or {})}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("worker: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("leave_out", ["gateway.py", "utils"])
def test_a_folder_missing_a_piece_of_the_sdk_says_so_in_one_line(tmp_path, leave_out):
    folder = copy_folder(tmp_path, leave_out)
    line = start_failing(folder)
    module = leave_out.removesuffix(".py")
    assert f"No module named '{module}'" in line, line
    assert f"'{module}' is part of the original Arterys SDK's folder (utils/, gateway.py, logging.yaml)" in line
    assert "docs/model-authors.md, 'Port a handler written for the original SDK'" in line


def test_without_flask_the_line_says_what_to_install(tmp_path):
    folder = copy_folder(tmp_path)
    blocker = tmp_path / "no-flask"
    blocker.mkdir()
    # An environment without flask: its import fails as it does where flask was never installed.
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoFlask:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'flask':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoFlask())\n")
    line = start_failing(folder, env={"PYTHONPATH": f"{blocker}:{ROOT}"})
    assert "No module named 'flask'" in line, line
    assert "pip install flask (the handler folder's requirements.txt)" in line
    assert "docs/model-authors.md" in line


def test_started_elsewhere_the_relative_logging_yaml_is_explained(tmp_path):
    folder = copy_folder(tmp_path)
    line = start_failing(folder, "--model-dir", str(folder), cwd=tmp_path)
    assert "FileNotFoundError" in line and "'logging.yaml' is relative to the working directory" in line, line
    assert "start the worker there (cd into it)" in line
