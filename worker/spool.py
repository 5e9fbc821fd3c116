"""Where incoming studies are kept while a call lasts: memory up to a budget, then files.

Each worker process owns one folder under the spool directory (`arterys-worker-*`), locked with flock
for as long as the process lives; every call that spills to disk gets a folder inside it, removed when
the call ends. A worker that was killed (kill -9, an OOM kill) cannot clean up, so at start every
`arterys-worker-*` folder whose lock nobody holds is removed: left-overs never pile up across restarts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("worker.spool")

PREFIX = "arterys-worker-"
LOCK_NAME = ".lock"


class SpoolRoot:
    """This process's own spool folder (created and locked now), after clearing stale ones."""

    def __init__(self, spool_dir: str | os.PathLike | None) -> None:
        parent = Path(spool_dir or tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        self.removed = remove_stale(parent)
        # Locked under a name remove_stale does not match, then renamed: another worker starting at the same
        # moment would otherwise see a folder without its lock yet, take it for a killed worker's, and remove it.
        staging = Path(tempfile.mkdtemp(prefix="." + PREFIX, dir=parent))
        self._lock = os.open(staging / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = staging.with_name(staging.name[1:])
        os.rename(staging, self.path)  # the lock belongs to the open file, so it survives the rename

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)


def remove_stale(parent: Path) -> int:
    """Removes the spool folders of workers that are gone (their lock is free); returns how many."""
    removed = 0
    for folder in parent.glob(PREFIX + "*"):
        try:
            lock = os.open(folder / LOCK_NAME, os.O_RDWR)
        except FileNotFoundError:
            lock = None  # killed before it could lock: nobody owns it
        except OSError:
            continue
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live worker's folder
        finally:
            if lock is not None:
                os.close(lock)
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d spool folder(s) left by workers that were killed", removed)
    return removed


class Spool:
    """One call's parts: memory up to `memory_budget` bytes, then files in a folder of its own."""

    def __init__(self, root: Path, memory_budget: int) -> None:
        self.root = root
        self.memory_budget = memory_budget
        self.in_memory = 0
        self.folder: Path | None = None

    def file_for(self, index: int) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="call-", dir=self.root))
        return self.folder / f"part-{index:06d}"

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class PartWriter:
    """Collects one part's chunks in memory, or writes them to its file once the call's budget is spent."""

    def __init__(self, part, spool: Spool) -> None:
        self.part = part  # a receive.ReceivedPart: size, data and path are filled in here
        self.spool = spool
        self.chunks: list[bytes] = []
        self.fd: int | None = None

    def write(self, data) -> None:
        """`data` is bytes or a memoryview of gRPC's buffer; kept as it is until the part ends."""
        self.part.size += len(data)
        if self.fd is None and self.spool.in_memory + len(data) <= self.spool.memory_budget:
            self.spool.in_memory += len(data)
            self.chunks.append(data)
            return
        if self.fd is None:  # over budget: the part moves to disk, with what it already had
            self.part.path = self.spool.file_for(self.part.index)
            self.fd = os.open(self.part.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            for chunk in self.chunks:
                self.spool.in_memory -= len(chunk)
                write_all(self.fd, chunk)
            self.chunks = []
        write_all(self.fd, data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        elif self.part.path is None:
            # One bytes object, made once: a model's BytesIO and read_bytes() then share it without copying.
            self.part.data = b"".join(self.chunks)
            self.chunks = []


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
