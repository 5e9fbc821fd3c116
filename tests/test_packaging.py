"""`pip install` of the wheel: the three programs and the packages, in an environment of their own.

The wheel is built from a copy of the sources (the build writes build/ and *.egg-info next to them) with
the pinned setuptools, offline; it is installed into a fresh venv whose dependencies are this project's
.venv (a .pth file), so nothing is downloaded. The programs then run as a model author runs them: from a
folder outside the repository, without PYTHONPATH, with the model package in that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.dicom_factory import SeriesSpec, write_study
from tests.services import ROOT, Service, free_port, wait_for_health, wait_for_http
from tests.worker_client import dicom_parts, infer, stub_for

PACKAGES = ("arterys_http", "bridge", "contract", "dicom_geometry", "example_models", "mock_model", "service_runtime",
            "testtool", "worker")
BUILD_FILES = ("pyproject.toml", "README.md", "logging.yaml", "requirements-bridge.txt", "requirements-worker.txt",
               "requirements-testtool.txt")
MODEL = textwrap.dedent("""
    from worker import BoundingBox, Model, Result

    class MyModel(Model):
        name = "outside"
        commands = ("get-bounding-box-2d",)
        default_command = "get-bounding-box-2d"

        def infer(self, study):
            first = study.series[0].instances[0]
            return Result(bounding_boxes=[BoundingBox("outside model", first.sop_instance_uid, [1, 1], [3, 3])])
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, source / name)
    for package in PACKAGES:  # symlinks=True: service_runtime/logging.yaml stays a link, as in the repository
        shutil.copytree(ROOT / package, source / package, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(dist)], check=True, capture_output=True, timeout=120)
    (built,) = dist.glob("arterys_grpc_bridge-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed; its dependencies are the ones of the project's .venv."""
    target = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=60)
    python = target / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=120)
    return target


def outside_environment(venv: Path) -> dict:
    """A user's shell: the venv's bin on PATH, no PYTHONPATH, none of the test run's service variables."""
    environment = {k: v for k, v in os.environ.items()
                   if k != "PYTHONPATH" and not k.startswith(("WORKER_", "BRIDGE_", "VIRTUAL_ENV"))}
    return {**environment, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}


def test_the_wheel_holds_every_module_the_logging_config_and_the_pins(wheel, venv):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            assert path.relative_to(ROOT).as_posix() in names, f"{path} is not in the wheel"
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/", "tools/", "deploy/"))]
    # The repository's logging.yaml, as a file of the service_runtime package (a link in the checkout).
    assert zipfile.ZipFile(wheel).read("service_runtime/logging.yaml") == (ROOT / "logging.yaml").read_bytes()
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.rsplit('-', 3)[0]}.dist-info/entry_points.txt").decode()
    for line in ("arterys-worker = worker.__main__:main", "arterys-bridge = bridge.__main__:main",
                 "arterys-testtool = testtool.__main__:main"):
        assert line in entry_points

    # Its dependencies are the requirement files' pins, and what the venv has satisfies them.
    pins = {line.strip() for name in BUILD_FILES if name.startswith("requirements-")
            for line in (ROOT / name).read_text().splitlines() if line.strip() and not line.startswith("#")}
    check = textwrap.dedent("""
        from importlib.metadata import requires, version
        from packaging.requirements import Requirement
        for text in sorted(set(requires("arterys-grpc-bridge"))):
            requirement = Requirement(text)
            assert version(requirement.name) in requirement.specifier, (text, version(requirement.name))
            print(text)
    """)
    run = subprocess.run([venv / "bin" / "python", "-c", check], capture_output=True, text=True, cwd=venv, timeout=60)
    assert run.returncode == 0, run.stderr
    assert set(run.stdout.split()) == {pin.replace(" ", "") for pin in pins}


def test_console_scripts_serve_a_model_from_the_current_directory(venv, tmp_path):
    outside = tmp_path / "my-project"
    (outside / "my_model").mkdir(parents=True)
    (outside / "my_model" / "__init__.py").write_text(MODEL)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    study = write_study(tmp_path / "study", [SeriesSpec("ct", rows=16, cols=16, count=2)])
    environment = outside_environment(venv)

    def start(name: str, args: list[str], port: int, cwd: Path) -> Service:
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([name, *args], cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT)
        return Service(process, port, log_path)

    worker_port, other_port, bridge_port = free_port(), free_port(), free_port()
    services = [
        # Found from the current directory, as uvicorn and gunicorn find an app.
        start("arterys-worker", ["--model", "my_model:MyModel", "--listen", f"127.0.0.1:{worker_port}"], worker_port,
              outside),
        # Found through --model-dir from anywhere else.
        start("arterys-worker", ["--model", "my_model", "--model-dir", str(outside), "--listen",
                                 f"127.0.0.1:{other_port}"], other_port, elsewhere),
        start("arterys-bridge", ["--worker", f"127.0.0.1:{worker_port}", "--listen", f"127.0.0.1:{bridge_port}"],
              bridge_port, elsewhere),
    ]
    try:
        worker, other, bridge = services
        wait_for_health(worker)
        wait_for_health(other)
        wait_for_http(bridge, "/healthcheck", "READY")
        run = subprocess.run(["arterys-testtool", "-i", str(study.folder), "-p", str(bridge_port), "-o",
                              str(tmp_path / "out"), "-q"], cwd=elsewhere, env=environment, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert '"label": "outside model"' in (tmp_path / "out" / "response.json").read_text()

        answer = infer(stub_for(other_port), {}, dicom_parts([i.path for i in study.instances]))
        assert answer.json["bounding_boxes_2d"][0]["label"] == "outside model"
        # logging.yaml came with the package: the worker's lines carry the request tags.
        assert "INFO worker [input_hash=- request_id=- trace_id=-] model outside loaded" in worker.log()
    finally:
        for service in services:
            service.stop()

    where = subprocess.run([venv / "bin" / "python", "-c", "import worker; print(worker.__file__)"], cwd=elsewhere,
                           env=environment, capture_output=True, text=True, check=True).stdout
    assert Path(where).is_relative_to(venv)  # the installed package, not the checkout


def test_installed_programs_call_themselves_by_the_name_typed(venv, tmp_path):
    environment = outside_environment(venv)
    for name in ("arterys-worker", "arterys-bridge", "arterys-testtool"):
        run = subprocess.run([name, "--help"], cwd=tmp_path, env=environment, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"usage: {name} "), run.stdout[:200]
