"""What the test tool knows about a study: its instances (headers only), grouped by series, in send order.

Why this exists: the tool sends the instances exactly as the protocol's mask layout counts slices (series
by series, time point by time point, along the slice normal) and later maps each mask slice back onto
the image it belongs to. Both follow from the order computed here, with the same rule the worker gives a
model (`dicom_geometry.slice_order`), so the tool never draws a correct mask on the wrong image.
Pixels are never kept in memory: an instance is re-read from disk when it is sent or drawn
(testtool.display), so a 1 GiB study costs a few headers. Files are found by testtool.loading.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from dicom_geometry import FrameGeometry, frame_geometry, slice_order


@dataclass(eq=False)
class InputImage:
    """One instance to send. Holds its header only; `read_bytes()` fetches the file when needed."""

    path: Path | None  # the file sent as is; None for a converted PNG/JPEG (bytes held in memory)
    source: Path  # the file this came from (the PNG/JPEG for a converted one), for messages
    dataset: Dataset  # header, read with stop_before_pixels
    sop_instance_uid: str
    series_instance_uid: str
    rows: int
    cols: int
    frames: int
    position: tuple[float, float, float] | None  # of the first frame
    orientation: tuple[float, ...] | None = None
    slice_index: int = 0  # slice of the first frame within its time point (frames are later slices)
    timepoint: int = 0
    content_type: str = "application/dicom"
    forced: bool = False  # read without the DICM preamble: decoding has to force it too
    _memory: bytes | None = field(default=None, repr=False)

    def read_bytes(self) -> bytes:
        """The exact bytes to send: the file on disk, or the converted secondary capture."""
        if self._memory is not None:
            return self._memory
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def has_pixels(self) -> bool:
        """False for non-image instances (structured reports, presentation states): nothing to draw."""
        return self.rows > 0 and self.cols > 0

    def geometry(self, frame: int = 0) -> FrameGeometry:
        """Position, orientation and spacing of one 0-based frame (enhanced multi-frame: its own)."""
        return frame_geometry(self.dataset, frame)

    @property
    def pixel_spacing(self) -> tuple[float, float] | None:
        """(row spacing, column spacing) in mm of the first frame, classic or enhanced header."""
        return self.geometry(0).pixel_spacing


@dataclass
class LoadedStudy:
    study_instance_uid: str
    images: list[InputImage]  # send order
    series: dict[str, list[InputImage]]  # same order, keyed by SeriesInstanceUID
    skipped: list[tuple[Path, str]]

    def series_shape(self, series_uid: str) -> tuple[int, int]:
        """(timepoints, depth) a 3D mask on this series must have; depth counts frames as slices."""
        images = self.series.get(series_uid, [])
        if not images:
            return 0, 0
        depth: Counter[int] = Counter()
        for image in images:
            depth[image.timepoint] += image.frames
        return max(depth) + 1, max(depth.values())


def order_series(images: list[InputImage]) -> list[InputImage]:
    """One series in the protocol's slice order (`dicom_geometry.order` states the rule); sets timepoint
    and slice_index on each image."""
    order = slice_order([image.dataset for image in images])
    for index, image in enumerate(images):
        image.timepoint, image.slice_index = order.slot(index)
    return [images[index] for index in order.order]
