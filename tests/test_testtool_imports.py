"""The test tool is a client: it must run without the bridge or worker code, as a model author runs it.

Each module of testtool/ is parsed (not imported, so nothing is hidden by lazy imports inside
functions) and every import statement is checked.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.imports import absolute_imports

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"bridge", "worker"}


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """`line: module` for every import of a FORBIDDEN package, at any depth of the module."""
    return [f"{line}: {name}" for line, name in absolute_imports(source, filename) if name.split(".")[0] in FORBIDDEN]


def test_the_check_sees_every_form_of_import():
    source = ("import os\nimport worker\nfrom bridge.app import x\nimport bridge.config as c\n"
              "def late():\n    from worker import study\n"
              "from arterys_http import protocol\nfrom . import sibling\nimport workers_elsewhere\n")
    assert forbidden_imports(source) == ["2: worker", "3: bridge.app", "4: bridge.config", "6: worker"]


def test_no_testtool_module_imports_bridge_or_worker():
    modules = sorted((ROOT / "testtool").glob("*.py"))
    assert len(modules) > 10  # the package really was found
    problems = {path.name: found for path in modules
                if (found := forbidden_imports(path.read_text(encoding="utf-8"), str(path)))}
    assert problems == {}


def test_the_wire_format_package_needs_nothing_but_the_standard_library():
    """arterys_http is shared by the bridge, the worker's checks, the test tool and the benchmarks: stdlib only,
    so that any of them (and any other client) can use it without pulling in the others' dependencies."""
    allowed = {"arterys_http", "__future__"} | set(sys.stdlib_module_names)
    modules = sorted((ROOT / "arterys_http").glob("*.py"))
    assert len(modules) >= 5
    problems = [f"{path.name}:{line} imports {name}" for path in modules
                for line, name in absolute_imports(path.read_text(encoding="utf-8"), str(path))
                if name.split(".")[0] not in allowed]
    assert problems == []
