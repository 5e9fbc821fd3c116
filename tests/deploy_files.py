"""Readers for the deployment files the tests check: docker-compose.yml (with Compose's variable
interpolation), Dockerfiles, and .dockerignore (with Docker's matching rules)."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.services import ROOT

DOCKERFILES = {"worker": ROOT / "docker/worker.Dockerfile", "bridge": ROOT / "docker/bridge.Dockerfile"}
CORE_SERVICES = ("worker", "bridge")
PYTHON_IMAGE = "docker.io/library/python:3.11-slim"  # the images' default base, fully qualified


def project_version() -> str:
    """pyproject.toml's version: the tag of the images in docker-compose.yml and deploy/k8s alike."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR-default}` in a string, as `docker compose`
    resolves them with the environment `env` (none set by default: the defaults apply)."""
    env = env or {}
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        if operator == ":-":
            return env.get(name) or default
        if operator == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", resolve, value)


def load_compose(path: Path = ROOT / "docker-compose.yml") -> dict:
    return yaml.safe_load(path.read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def dockerfile_arguments(path: Path, instruction: str) -> list[str]:
    """The arguments of every `instruction` (FROM, ARG, USER, RUN, ...) of a Dockerfile, in order."""
    return [argument for kind, argument in dockerfile_instructions(path) if kind == instruction]


def dockerfile_env(path: Path) -> dict[str, str]:
    env = {}
    for instruction, argument in dockerfile_instructions(path):
        if instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", argument)))
    return env


def copy_sources(path: Path) -> list[str]:
    """The sources of every COPY (without --from) of a Dockerfile, relative to its build context."""
    sources = []
    for instruction, argument in dockerfile_instructions(path):
        if instruction == "COPY" and "--from" not in argument:
            *paths, _ = [word for word in argument.split() if not word.startswith("--")]
            sources += paths
    return sources


# ------------------------------------------------------------------------------------ .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's pattern syntax (Go filepath.Match plus `**`), for slash-separated relative paths."""
    pattern = os.path.normpath(pattern.strip().lstrip("/"))
    assert "[" not in pattern and "\\" not in pattern, f"character classes and escapes are not handled: {pattern}"
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3  # any folders, or none
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        else:
            regex, i = regex + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return re.compile(regex)


class DockerIgnore:
    """Which paths of a build context `docker build` sends: a path is excluded when the last pattern
    matching it or one of its parent folders is not a `!` exception."""

    def __init__(self, text: str) -> None:
        self.rules = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                negated = line.startswith("!")
                self.rules.append((negated, _pattern_regex(line[1:] if negated else line)))

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negated, regex in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not negated
        return excluded

    def context_files(self, root: Path) -> Iterator[Path]:
        """Every file sent as build context. A folder excluded with no exception under it is not walked
        (that is how .venv and .git are skipped quickly)."""
        exceptions = [regex.pattern for negated, regex in self.rules if negated]
        for folder, dirs, files in os.walk(root):
            relative = Path(folder).relative_to(root).as_posix()
            relative = "" if relative == "." else relative + "/"
            dirs[:] = [d for d in dirs if not (self.excluded(relative + d) and not any(
                e.startswith(re.escape(relative + d)) for e in exceptions))]
            for name in files:
                if not self.excluded(relative + name):
                    yield Path(folder) / name
