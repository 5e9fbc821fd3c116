"""The import graph of the shipped packages has no circle, and its arrows point down.

Every module of the packages the wheel ships (pyproject.toml) is parsed, not imported, so imports inside
functions and under TYPE_CHECKING count too: a circle hidden by a lazy import is still a circle, and the
next edit may make it bite. `from package import name` is an arrow to the submodule `package.name` when
there is one, else to the package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.services import ROOT

PACKAGES = re.findall(r'"([a-z_]+)"', re.search(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(),
                                                re.DOTALL)[1])
# What each package may import among the shipped ones: the contract and the runtime below both services,
# the model API below the serving machinery.
MAY_IMPORT = {
    "contract": {"arterys_http"},
    "service_runtime": {"contract"},
    "dicom_geometry": set(),
    "arterys_http": set(),
    "worker.sdk": {"arterys_http", "contract", "dicom_geometry"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def shipped_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = shipped_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_check_finds_a_circle_and_reads_every_form_of_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert len(graph) > 100 and "bridge.app" in graph and "worker.serving.servicer" in graph
    assert "contract.errors" in graph["bridge.errors"]  # `from contract import errors as contract_errors`


def test_no_import_circle_in_the_shipped_packages():
    assert circles(import_graph()) == []


def test_lower_layers_import_nothing_of_the_layers_above():
    problems = []
    for name, targets in import_graph().items():
        for layer, allowed in MAY_IMPORT.items():
            if name == layer or name.startswith(layer + "."):
                problems += [f"{name} imports {target}" for target in targets
                             if not target.startswith(layer) and target.split(".")[0] not in allowed]
    assert problems == []
