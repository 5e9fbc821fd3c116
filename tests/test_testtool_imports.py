"""The test tool is a client: it must run without the bridge or worker code, as a model author runs it.

Each module of testtool/ is parsed (not imported, so nothing is hidden by lazy imports inside
functions) and every import statement is checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"bridge", "worker"}


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """`line: module` for every import of a FORBIDDEN package, at any depth of the module."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    return found


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
