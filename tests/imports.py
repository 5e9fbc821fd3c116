"""What a module imports, read from its source (parsed, not imported: imports inside functions count too)."""

from __future__ import annotations

import ast


def absolute_imports(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, module) for every absolute import statement, at any depth of the module."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module or ""))
    return found
