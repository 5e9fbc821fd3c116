"""Notices changed Python sources by polling their modification times: stdlib only, no inotify dependency.

A model package is a few dozen files; one stat each every half second costs nothing, and polling works
the same on every file system (bind mounts, network shares) where change notification does not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("worker.reload")

MAX_FILES = 20_000
# Folders never worth watching: caches, VCS data, virtual environments, installed packages.
SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages", "dist-packages"}


def python_files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS
                       and not (Path(folder, d) / "pyvenv.cfg").exists()]
            yield from (Path(folder, name) for name in files if name.endswith(".py"))


class SourceWatcher:
    """`changed()` lists the files added, removed or modified since the previous call (or creation)."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = [Path(root) for root in roots]
        self._seen = self._snapshot()
        log.debug("watching %d source files under %s", len(self._seen), ", ".join(map(str, self.roots)))

    def _snapshot(self) -> dict[Path, tuple[int, int]]:
        seen: dict[Path, tuple[int, int]] = {}
        for path in python_files(self.roots):
            if len(seen) >= MAX_FILES:
                log.warning("watching only the first %d files: point --model-dir at the model's own folder",
                            MAX_FILES)
                break
            try:
                stat = path.stat()
            except OSError:  # removed between the listing and the stat: the next poll sees it gone
                continue
            seen[path] = (stat.st_mtime_ns, stat.st_size)
        return seen

    def changed(self) -> list[Path]:
        now = self._snapshot()
        changed = sorted(path for path in now.keys() | self._seen.keys() if now.get(path) != self._seen.get(path))
        self._seen = now
        return changed
