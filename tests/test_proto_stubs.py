"""The committed gRPC stubs are what `make proto` generates from proto/ today (fails when they are stale)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO = "proto/contract/inference.proto"
STUBS = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def makefile_protoc_args() -> list[str]:
    """The arguments the Makefile's `proto` target passes to grpc_tools.protoc."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index("proto: setup")
    for line in lines[start + 1:]:
        if "grpc_tools.protoc" in line:
            return shlex.split(line.split("grpc_tools.protoc", 1)[1])
        if not line.startswith("\t"):
            break
    raise AssertionError("the Makefile's proto target does not run grpc_tools.protoc")


def test_makefile_generates_into_the_contract_package():
    assert makefile_protoc_args() == ["-I", "proto", "--python_out=.", "--pyi_out=.", "--grpc_python_out=.", PROTO]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stubs")
    args = [a.replace("=.", f"={out}") for a in makefile_protoc_args()]
    completed = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return out / "contract"


@pytest.mark.parametrize("name", STUBS)
def test_committed_stub_is_up_to_date(generated, name):
    fresh = (generated / name).read_bytes()
    committed = (ROOT / "contract" / name).read_bytes()
    assert fresh == committed, f"contract/{name} is stale: run `make proto` and commit the result"
