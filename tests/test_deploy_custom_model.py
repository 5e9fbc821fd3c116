"""deploy/examples/my-model: a worker image for your own model, built FROM the worker image.

The Dockerfile and its compose override are checked against the base image and docker-compose.yml;
then the example model runs the way that image runs it (WORKER_MODEL from its ENV, the package where
the image copies it) and answers a real study.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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

EXAMPLE = ROOT / "deploy/examples/my-model"
DOCKERFILE = EXAMPLE / "Dockerfile"


def arguments(instruction: str) -> list[str]:
    return dockerfile_arguments(DOCKERFILE, instruction)


def test_dockerfile_builds_from_the_worker_image():
    (default_base,) = [a.split("=", 1)[1] for a in arguments("ARG") if a.startswith("WORKER_BASE=")]
    assert interpolate(load_compose()["services"]["worker"]["image"]) == default_base
    assert dockerfile_instructions(DOCKERFILE)[1] == ("FROM", "${WORKER_BASE}")
    for source in copy_sources(DOCKERFILE):
        assert (EXAMPLE / source).exists(), f"COPY {source}: not in the build context {EXAMPLE}"
    # Back to the base image's unprivileged user after installing as root.
    base_user = [a for kind, a in dockerfile_instructions(DOCKERFILES["worker"]) if kind == "USER"]
    assert arguments("USER")[-1] == base_user[-1]
    assert dockerfile_env(DOCKERFILE)["WORKER_MODEL"] == "my_model:BrightSpotModel"
    for line in (EXAMPLE / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", line.strip()), f"unpinned: {line}"


def test_compose_override_builds_the_example_on_top_of_the_worker():
    override = yaml.safe_load((EXAMPLE / "compose.yml").read_text())
    assert set(override["services"]) == {"worker"}
    build = override["services"]["worker"]["build"]
    # Compose resolves paths against the first file, docker-compose.yml at the repository root.
    assert ROOT / build["context"] == EXAMPLE and (ROOT / build["context"] / build["dockerfile"]) == DOCKERFILE
    assert interpolate(build["args"]["WORKER_BASE"]) == interpolate(load_compose()["services"]["worker"]["image"])
    # WORKER_MODEL is left to the image: compose must not override it with the mock model.
    assert "WORKER_MODEL" not in load_compose()["services"]["worker"]["environment"]
    assert "WORKER_MODEL" not in override["services"]["worker"].get("environment", {})


@pytest.fixture
def example_worker(tmp_path):
    # The image copies my_model/ next to the worker package (WORKDIR /app): here, PYTHONPATH does that.
    port, metrics_port = free_port(), free_port()
    environment = {**dockerfile_env(DOCKERFILES["worker"]), **dockerfile_env(DOCKERFILE),
                   "WORKER_LISTEN": f"127.0.0.1:{port}", "WORKER_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                   "WORKER_SPOOL_DIR": str(tmp_path), "PYTHONPATH": str(EXAMPLE)}
    worker = spawn(tmp_path, "worker", ["-m", "worker"], port, environment)
    yield worker
    worker.stop()


def test_example_model_serves_a_study(example_worker, tmp_path):
    wait_for_health(example_worker)
    study = write_study(tmp_path / "study", [SeriesSpec("ct", rows=24, cols=32, count=3),
                                             SeriesSpec("mr", rows=20, cols=16, count=2, modality="MR")])
    answer = infer(stub_for(example_worker.port), {}, dicom_parts([Path(i.path) for i in study.instances]))
    boxes = answer.json["bounding_boxes_2d"]
    assert len(boxes) == 2
    instances = {i.sop_instance_uid: i for i in study.instances}
    for box in boxes:
        instance = instances[box["SOPInstanceUID"]]
        (column_min, row_min), (column_max, row_max) = box["top_left"], box["bottom_right"]
        assert 0 <= column_min <= column_max < instance.cols and 0 <= row_min <= row_max < instance.rows
