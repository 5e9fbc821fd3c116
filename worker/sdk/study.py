"""The study a model receives: instances with parsed headers, attachments, series in anatomical order.

Instance bytes stay in files (the worker spools each part to disk as it arrives), so a 1 GiB study does
not need 1 GiB of memory; headers are parsed once, without pixel data, by the worker as each part arrives
(worker/serving/instances.py), before the model sees them.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom

from arterys_http.protocol import ImageInfo, StudyIndex
from dicom_geometry import plane_normal, slice_order
from worker.sdk.refusals import InvalidInput

log = logging.getLogger("worker.study")


def part_label(index: int) -> str:
    """How messages and log lines name the part at `index` (0: the first after the JSON part): by its number,
    never by its file name, which often holds a patient's name."""
    return f"part {index + 1}"


class Part:
    """One part of the request after its JSON part, in request order: an Instance or an Attachment.

    Its bytes are in memory or in a spool file, as the worker received them; `read_bytes()` and `open()`
    work the same either way, and `path` writes a file first when the part was kept in memory.
    """

    def __init__(self, index: int, path: Path | None = None, content_type: str = "", filename: str = "",
                 name: str = "", *, data: bytes | None = None, spool=None, label: str = "") -> None:
        if (path is None) == (data is None):
            raise ValueError("a part has either a path or data")
        self.index = index  # position among all parts after the JSON part
        self.content_type = content_type
        self.filename = filename
        self.name = name
        # How messages and log lines name this part ("part 3"; a studyPath folder's files: "file 3 of the
        # studyPath folder"), never by its file name.
        self.label = label or part_label(index)
        self._path = Path(path) if path is not None else None
        self._data = data
        self._spool = spool

    def __repr__(self) -> str:
        return f"{type(self).__name__}(index={self.index}, size={self.size})"  # no file name: reprs reach logs

    @property
    def size(self) -> int:
        return len(self._data) if self._data is not None else self._path.stat().st_size

    @property
    def path(self) -> Path:
        """A file holding the part (written on first use when the part was kept in memory)."""
        if self._path is None:
            if self._spool is None:
                raise RuntimeError("this part was kept in memory and has no spool to write it to")
            self._path = self._spool.file_for(self.index)
            self._path.write_bytes(self._data)
        return self._path

    def read_bytes(self) -> bytes:
        return self._data if self._data is not None else self._path.read_bytes()

    def open(self) -> BinaryIO:
        # BytesIO shares the bytes it starts from until written to: no copy of the part.
        return io.BytesIO(self._data) if self._data is not None else open(self._path, "rb")


class Attachment(Part):
    """A non-DICOM part of the request (a licence, a configuration)."""


class Instance(Part):
    """One DICOM file of the study. `header` is parsed without pixel data; `dataset()` reads it all."""

    def __init__(self, index: int, path: Path | None = None, content_type: str = "", filename: str = "",
                 name: str = "", header: pydicom.Dataset | None = None, *, data: bytes | None = None,
                 spool=None, label: str = "") -> None:
        super().__init__(index, path, content_type, filename, name, data=data, spool=spool, label=label)
        self.header = header

    def dataset(self) -> pydicom.Dataset:
        """The whole dataset, pixel data included (decoding needs the matching pylibjpeg plugin)."""
        with self.open() as handle:
            return pydicom.dcmread(handle)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.header.SOPInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.header.get("SeriesInstanceUID", ""))

    @property
    def rows(self) -> int:
        return int(self.header.get("Rows", 0))

    @property
    def columns(self) -> int:
        return int(self.header.get("Columns", 0))

    @property
    def frames(self) -> int:
        return int(self.header.get("NumberOfFrames", 1) or 1)

    @property
    def position(self) -> tuple[float, float, float] | None:
        value = self.header.get("ImagePositionPatient")
        return tuple(float(v) for v in value) if value and len(value) == 3 else None

    @property
    def normal(self) -> np.ndarray | None:
        """The unit normal of the image plane (ImageOrientationPatient's row x column direction), or None."""
        return plane_normal(self.header.get("ImageOrientationPatient"))

    def info(self) -> ImageInfo:
        return ImageInfo(self.sop_instance_uid, self.series_instance_uid, self.rows, self.columns, self.frames)


@dataclass
class Series:
    """The instances of one series, ordered as the protocol's 3D masks expect.

    Order (dicom_geometry.slice_order): by position along the slice normal; when positions repeat, the
    series has several time points, ordered time point first (the mask layout's slowest axis), from the
    temporal tags; ties by InstanceNumber, then SOP Instance UID. `rows`, `columns` and `mask_shape()` need
    every instance to have one image size: a series that mixes sizes is the sender's mistake, answered 400
    naming two instances that differ.
    """

    uid: str
    instances: list[Instance]
    timepoints: int = 1

    @classmethod
    def ordered(cls, uid: str, instances: list[Instance]) -> Series:
        # One rule shared with the test tool and the legacy mock (dicom_geometry.order documents it), so
        # that a mask the model writes for this order is drawn on the same images everywhere.
        order = slice_order([instance.header for instance in instances])
        return cls(uid, [instances[index] for index in order.order], order.timepoints)

    @property
    def rows(self) -> int:
        return self._size()[0]

    @property
    def columns(self) -> int:
        return self._size()[1]

    def _size(self) -> tuple[int, int]:
        first = self.instances[0]
        for other in self.instances[1:]:
            if (other.rows, other.columns) != (first.rows, first.columns):
                raise InvalidInput(
                    f"a series mixes image sizes: {first.label} is {first.rows} x {first.columns} pixels but "
                    f"{other.label}, of the same series, is {other.rows} x {other.columns}; send each size as its "
                    "own series"
                )
        return first.rows, first.columns

    @property
    def frame_count(self) -> int:
        return sum(i.frames for i in self.instances)

    @property
    def depth(self) -> int:
        """Slices per time point: the `depth` of a 3D mask over this series."""
        return self.frame_count // self.timepoints

    def mask_shape(self) -> tuple[int, int, int, int]:
        """(timepoints, depth, height, width): the numpy shape of a 3D mask over this series."""
        return (self.timepoints, self.depth, self.rows, self.columns)


@dataclass
class Study:
    """One inference request as the model sees it.

    Attributes:
        request: the request's JSON part (inference_command, studyUID, free options), untouched.
        command: the inference_command to run (the model's default when the request names none).
        input_hash: SHA-256 of the request parts, as the protocol defines it; logs carry it.
        instances: DICOM instances in request order. attachments: the other parts, in request order.
        route: the HTTP route the request came in on.
    """

    request: dict
    command: str
    input_hash: str
    instances: list[Instance]
    attachments: list[Attachment] = field(default_factory=list)
    route: str = "/"
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    _deadline: Callable[[], float | None] = field(default=lambda: None, repr=False)

    @cached_property
    def series(self) -> list[Series]:
        """Series in order of first appearance, each ordered along its slice normal."""
        groups: dict[str, list[Instance]] = {}
        for instance in self.instances:
            groups.setdefault(instance.series_instance_uid, []).append(instance)
        return [Series.ordered(uid, members) for uid, members in groups.items()]

    def series_by_uid(self, uid: str) -> Series:
        """The series with this Series Instance UID; KeyError when the study has none (its message does not quote
        the UID: messages reach logs)."""
        for series in self.series:
            if series.uid == uid:
                return series
        raise KeyError("the study has no series with the SeriesInstanceUID asked for")

    def index(self) -> StudyIndex:
        return StudyIndex.of(i.info() for i in self.instances)

    def is_cancelled(self) -> bool:
        """True once the caller went away or its deadline passed: long models may stop early."""
        return self._cancelled.is_set()

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline (None: no deadline)."""
        return self._deadline()
