"""deploy/examples/onnx-body: the ONNX example's worker image (GPU by default) and its compose override.

Checked against the base image, docker-compose.yml and the example's own pins; the image's build (its
`sed` of the onnxruntime pin) is replayed here, and the model runs the way the image runs it: the modules
the image copies, WORKER_MODEL from its ENV, a real study through a `python -m worker` process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.deploy_files import (
    DOCKERFILES,
    copy_sources,
    dockerfile_arguments,
    dockerfile_env,
    dockerfile_instructions,
    interpolate,
    load_compose,
)
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import ROOT, free_port, spawn, wait_for_health
from tests.worker_client import dicom_parts, infer, stub_for

EXAMPLE = ROOT / "deploy/examples/onnx-body"
DOCKERFILE = EXAMPLE / "Dockerfile"
CONTEXT = ROOT / "example_models"
PINS = CONTEXT / "onnx_body/requirements.txt"


def build_arg(name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in dockerfile_arguments(DOCKERFILE, "ARG") if a.startswith(f"{name}=")]
    return value


def test_dockerfile_builds_from_the_worker_image_with_the_examples_modules():
    assert interpolate(load_compose()["services"]["worker"]["image"]) == build_arg("WORKER_BASE")
    assert dockerfile_instructions(DOCKERFILE)[1] == ("FROM", "${WORKER_BASE}")
    for source in copy_sources(DOCKERFILE):
        assert (CONTEXT / source).exists(), f"COPY {source}: not in the build context {CONTEXT}"
    assert dockerfile_arguments(DOCKERFILE, "USER")[-1] == dockerfile_arguments(DOCKERFILES["worker"], "USER")[-1]
    assert dockerfile_env(DOCKERFILE)["WORKER_MODEL"] == "example_models.onnx_body"


def test_the_build_turns_the_onnxruntime_pin_into_the_gpu_package_of_the_same_release(tmp_path):
    (run,) = [a for a in dockerfile_arguments(DOCKERFILE, "RUN") if "sed" in a]
    expression = re.search(r'sed "([^"]+)"', run)[1].replace("${ONNXRUNTIME}", build_arg("ONNXRUNTIME"))
    sed = shutil.which("sed")
    assert sed, "sed is missing: apt-get install -y sed"
    out = subprocess.run([sed, expression, str(PINS)], capture_output=True, text=True, check=True).stdout
    pins = [line for line in out.splitlines() if line and not line.startswith("#")]
    (original,) = [line for line in PINS.read_text().splitlines() if line.startswith("onnxruntime==")]
    assert "onnxruntime-gpu[cuda,cudnn]==" + original.split("==")[1] in pins
    assert not [line for line in pins if line.startswith("onnxruntime==")]
    for line in pins:  # every pin exact, as in every requirement file
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[0-9][\w.]*", line), f"unpinned: {line}"


def test_compose_override_builds_the_example_on_top_of_the_worker():
    override = yaml.safe_load((EXAMPLE / "compose.yml").read_text())
    assert set(override["services"]) == {"worker"}
    build = override["services"]["worker"]["build"]
    # Compose resolves the context against the first file (the repository root), the Dockerfile against it.
    assert ROOT / build["context"] == CONTEXT and (CONTEXT / build["dockerfile"]).resolve() == DOCKERFILE
    assert interpolate(build["args"]["WORKER_BASE"]) == interpolate(load_compose()["services"]["worker"]["image"])
    assert build["args"]["ONNXRUNTIME"] == build_arg("ONNXRUNTIME")
    assert "WORKER_MODEL" not in override["services"]["worker"].get("environment", {})


def test_the_model_serves_a_study_as_the_image_runs_it(tmp_path):
    # The image's /app/example_models holds only what the Dockerfile copies; found first (--model-dir), it
    # hides the checkout's package, so a module the example needs and the image lacks fails the import here.
    app = tmp_path / "app"
    for source in copy_sources(DOCKERFILE):
        target = app / "example_models" / Path(source).name
        if (CONTEXT / source).is_dir():
            shutil.copytree(CONTEXT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CONTEXT / source, target)
    port = free_port()
    environment = {**dockerfile_env(DOCKERFILES["worker"]), **dockerfile_env(DOCKERFILE),
                   "WORKER_LISTEN": f"127.0.0.1:{port}", "WORKER_METRICS_LISTEN": "", "WORKER_SPOOL_DIR": str(tmp_path),
                   "PYTHONPATH": str(app)}
    worker = spawn(tmp_path, "worker", ["-m", "worker", "--model-dir", str(app)], port, environment)
    try:
        wait_for_health(worker)
        study = write_study(tmp_path / "study", [SeriesSpec("ct", rows=24, cols=32, count=2)])
        answer = infer(stub_for(port), {}, dicom_parts([Path(i.path) for i in study.instances]))
    finally:
        worker.stop()
    assert answer.json["parts"][0]["binary_type"] == "probability_mask"
    assert answer.json["study_ml_json"]["execution_provider"] == "CPUExecutionProvider"
