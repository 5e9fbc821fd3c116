"""Where incoming studies are kept while a call lasts: memory up to a budget, then files.

What every call's study holds is counted in one `StoreBudget` per worker: bytes in memory (a call keeps
its first `--spool-memory-mib` there while the worker-wide `--max-study-memory-mib` has room; beyond it
parts go to disk) and bytes in the spool folder (at most `--max-spool-bytes`: a call that would write
more is ended with `SpoolFull`, and admission refuses new calls while the spool is full). So what
studies still arriving may take is bounded by these bytes, not by a count of calls.

Each worker process owns one folder under the spool directory (`arterys-worker-*`), locked with flock
for as long as the process lives; every call that spills to disk gets a folder inside it, removed when
the call ends. A worker that was killed (kill -9, an OOM kill) cannot clean up, so at start every
`arterys-worker-*` folder whose lock nobody holds is removed: left-overs never pile up across restarts.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from worker.serving.errors import SpoolFull

log = logging.getLogger("worker.spool")

PREFIX = "arterys-worker-"
LOCK_NAME = ".lock"
# A message smaller than this is copied into the part's buffer rather than kept as a view of gRPC's
# message: a view costs ~200 bytes of bookkeeping, so 1-byte chunks would otherwise hold 200x their size.
COALESCE_BYTES = 64 << 10
# --max-spool-bytes 0: this share of what the spool's file system has free when the worker starts.
DEFAULT_SPOOL_SHARE = 0.9


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


def spool_limit(setting: int, folder: Path) -> int:
    """--max-spool-bytes, or (0) DEFAULT_SPOOL_SHARE of the space free on `folder`'s file system now."""
    if setting > 0:
        return setting
    info = os.statvfs(folder)
    return int(info.f_bavail * info.f_frsize * DEFAULT_SPOOL_SHARE)


class StoreBudget:
    """The worker-wide count of study bytes held in memory and in the spool, by every call at once.

    `memory_limit` bounds what calls keep in memory (beyond it their parts go to disk, so memory never
    refuses a call); `spool_limit` bounds the spool (beyond it calls are refused or ended). Used on the
    event loop only.
    """

    def __init__(self, memory_limit: int, spool_limit: int) -> None:
        self.memory_limit = memory_limit
        self.spool_limit = spool_limit
        self.memory = 0
        self.spool = 0
        self._said_full = False  # one warning each time the spool fills, not one per refused call
        self._on_room: list[Callable[[], None]] = []

    def when_room(self, callback: Callable[[], None]) -> None:
        """Calls `callback` each time a full spool has room again (admission wakes a call waiting for a place)."""
        self._on_room.append(callback)

    @property
    def spool_full(self) -> bool:
        return self.spool >= self.spool_limit

    def take_memory(self, size: int) -> bool:
        if self.memory + size > self.memory_limit:
            return False
        self.memory += size
        return True

    def give_memory(self, size: int) -> None:
        self.memory -= size

    def take_spool(self, size: int) -> None:
        if self.spool + size > self.spool_limit:
            if not self._said_full:
                self._said_full = True
                log.warning("%s (calls needing more are ended, new ones refused)", self.spool_full_message())
            raise SpoolFull(self.spool_full_message())
        self.spool += size

    def give_spool(self, size: int) -> None:
        was_full = self.spool_full
        self.spool -= size
        if was_full and not self.spool_full:
            for callback in self._on_room:
                callback()
        if self._said_full and self.spool < self.spool_limit * 0.9:
            self._said_full = False
            log.info("the spool has room again: %d of %d bytes in use", self.spool, self.spool_limit)

    def spool_full_message(self) -> str:
        return (f"the worker's spool is full: studies arriving or waiting for the model hold {self.spool:,} of "
                f"the {self.spool_limit:,} bytes its --max-spool-bytes allows; retry later or elsewhere")


class Spool:
    """One call's parts: memory up to `memory_budget` bytes (while the worker's budget has room), then files
    in a folder of its own. Everything it holds is given back to `budget` by cleanup()."""

    def __init__(self, root: Path, memory_budget: int, budget: StoreBudget | None = None) -> None:
        self.root = root
        self.memory_budget = memory_budget
        self.budget = budget or StoreBudget(memory_budget, 1 << 62)
        self.in_memory = 0
        self.on_disk = 0
        self.folder: Path | None = None

    def file_for(self, index: int) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="call-", dir=self.root))
        return self.folder / f"part-{index:06d}"

    def keep_in_memory(self, size: int) -> bool:
        if self.in_memory + size > self.memory_budget or not self.budget.take_memory(size):
            return False
        self.in_memory += size
        return True

    def moved_to_disk(self, size: int) -> None:
        """`size` bytes kept in memory are now in a file: counted there instead (raises SpoolFull)."""
        self.to_disk(size)
        self.in_memory -= size
        self.budget.give_memory(size)

    def to_disk(self, size: int) -> None:
        self.budget.take_spool(size)
        self.on_disk += size

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.budget.give_memory(self.in_memory)
        self.budget.give_spool(self.on_disk)
        self.in_memory = self.on_disk = 0


class PartWriter:
    """Collects one part's chunks in memory, or writes them to its file once the call's budget is spent."""

    def __init__(self, part, spool: Spool) -> None:
        self.part = part  # a receive.ReceivedPart: size, data and path are filled in here
        self.spool = spool
        self.chunks: list = []  # bytes, views of gRPC's messages, and bytearrays of coalesced small ones
        self.fd: int | None = None

    def write(self, data) -> None:
        """`data` is bytes or a memoryview of gRPC's buffer: big ones are kept as they are until the part
        ends, small ones copied together (COALESCE_BYTES)."""
        size = len(data)
        self.part.size += size
        if self.fd is None and self.spool.keep_in_memory(size):
            if size >= COALESCE_BYTES:
                self.chunks.append(data)
            elif self.chunks and type(self.chunks[-1]) is bytearray and len(self.chunks[-1]) < COALESCE_BYTES:
                self.chunks[-1] += data
            else:
                self.chunks.append(bytearray(data))
            return
        if self.fd is None:  # over budget: the part moves to disk, with what it already had
            self.part.path = self.spool.file_for(self.part.index)
            self.fd = os.open(self.part.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            held = sum(len(chunk) for chunk in self.chunks)
            self.spool.moved_to_disk(held)
            for chunk in self.chunks:
                self._write(chunk)
            self.chunks = []
        self.spool.to_disk(size)
        self._write(data)

    def _write(self, data) -> None:
        try:
            write_all(self.fd, data)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The file system filled before --max-spool-bytes did (other files share it).
            log.warning("the spool's file system is full (%s) with %d bytes counted in the spool",
                        os.strerror(error.errno), self.spool.budget.spool)
            raise SpoolFull("the worker's spool file system is full; retry later or elsewhere") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        elif self.part.path is None:
            # One bytes object, made once: a model's BytesIO and read_bytes() then share it without copying.
            self.part.data = self.chunks[0] if len(self.chunks) == 1 and type(self.chunks[0]) is bytes \
                else b"".join(self.chunks)
            self.chunks = []


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
