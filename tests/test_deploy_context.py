""".dockerignore: the build context holds what the images COPY and nothing else (no .venv, no .git)."""

from __future__ import annotations

import pytest

from tests.deploy_files import DOCKERFILES, DockerIgnore, copy_sources
from tests.services import ROOT


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore((ROOT / ".dockerignore").read_text())


@pytest.fixture(scope="module")
def context(ignore) -> set[str]:
    return {path.relative_to(ROOT).as_posix() for path in ignore.context_files(ROOT)}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_file_an_image_copies_is_in_the_context(name, ignore, context):
    for source in copy_sources(DOCKERFILES[name]):
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files = [f.relative_to(ROOT).as_posix() for f in files if "__pycache__" not in f.parts]
        assert files, source
        missing = [f for f in files if f not in context]
        assert not missing, f"{DOCKERFILES[name].name} COPYs {source}, but .dockerignore leaves out {missing}"


def test_the_context_leaves_out_what_no_image_needs(ignore, context):
    for path in (".venv/bin/python", ".git/HEAD", ".git", "tests/test_deploy.py", "deploy/k8s/base/kustomization.yaml",
                 "benchmarks/run_all.py", "output/response.json", "worker/__pycache__/server.cpython-311.pyc",
                 "requirements-dev.txt", "README.md", ".env"):
        assert ignore.excluded(path), path
    assert not any(path.startswith((".venv/", ".git/", "tests/")) for path in context)
    assert not any("__pycache__" in path for path in context)
    # The images' sources and pins: a few hundred kB, not the 235 MB virtualenv.
    size = sum((ROOT / path).stat().st_size for path in context)
    assert size < 5 << 20, f"build context is {size} bytes"


def test_docker_ignore_matching_follows_docker():
    """The matcher the tests rely on, on Docker's documented cases."""
    rules = DockerIgnore("*\n!keep/\n**/*.tmp\n!keep/wanted.tmp\n/top.txt\ndocs/**/*.md\n")
    assert rules.excluded("anything") and rules.excluded("folder/file")
    assert not rules.excluded("keep/file.py") and not rules.excluded("keep/sub/file.py")
    assert rules.excluded("keep/other.tmp") and rules.excluded("keep/sub/x.tmp")
    assert not rules.excluded("keep/wanted.tmp")  # the last matching rule decides
    assert DockerIgnore("/top.txt").excluded("top.txt") and not DockerIgnore("/top.txt").excluded("a/top.txt")
    docs = DockerIgnore("docs/**/*.md")
    assert docs.excluded("docs/a.md") and docs.excluded("docs/x/y/a.md") and not docs.excluded("docs/a.txt")
