"""The one slice order: how the instances of a series line up with a 3D mask's (timepoint, slice) axes.

The protocol counts a series' frames as slices, time point by time point: a 3D mask is
(timepoints, depth, height, width) in C order. The worker (which gives a model `Series.instances`), the
test tool (which draws a mask on the images) and the legacy mock handler must agree on which instance is
slice k of time point t, or a correct mask is shown on the wrong images. So all three call `slice_order`.

The rule, for the instances of one series:

1. Geometry. Each instance's position is that of its first frame (enhanced multi-frame functional groups
   first, see `frame_geometry`). The slice normal is the unit normal of the orientation of the instance
   that comes first by the tie rule (4.), so it does not depend on the input order. Positions are
   compared along that normal with one tolerance, POSITION_TOLERANCE_MM: two positions closer than it
   are the same slice position (neighbours closer than it are chained into one position).
2. Time points, with geometry. When positions repeat and every position holds the same number of
   instances T > 1, the series has T time points. At each position the instances are ranked by time:
   by the temporal attributes every instance of the series has, in this order: TemporalPositionIdentifier
   (or the enhanced TemporalPositionIndex), TriggerTime (or NominalCardiacTriggerDelayTime), acquisition
   date and time (AcquisitionDateTime, AcquisitionDate + AcquisitionTime, or FrameAcquisitionDateTime);
   then by the tie rule, so without any temporal attribute the instance number decides. The rank is the
   time point. Each time point must then hold the same number of frames, else see 3.
3. Otherwise there is one time point, and instances go along the normal; repeated positions that do not
   form a regular grid (a slice sent twice) stay next to each other, ordered by the temporal attributes,
   then the tie rule.
   Without geometry (an instance lacks a position, or no instance has an orientation) the order is the
   tie rule alone, except that a TemporalPositionIdentifier on every instance, with more than one value
   and the same number of frames per value, makes the time points (an explicit time index needs no
   geometry).
4. Ties are broken by InstanceNumber (missing numbers last), then SOPInstanceUID, then input position:
   the data decides, not the order files were found or sent in.

Frames of a multi-frame instance are never reordered or split: they are consecutive slices, as the
protocol counts them. Time point t holds the slices t * depth ... (t + 1) * depth - 1 of that sequence.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_geometry.frames import frame_attribute, frame_count, frame_geometry

POSITION_TOLERANCE_MM = 0.01  # far below any slice spacing, far above DS rounding in positions


@dataclass(frozen=True)
class SliceOrder:
    """Where each input instance goes. Indices refer to the headers as passed to `slice_order`."""

    order: tuple[int, ...]  # input indices in the protocol's order
    timepoints: int
    depth: int  # slices (frames) per time point
    offsets: tuple[int, ...]  # per input index: its first frame's index in the flattened frame sequence

    def slot(self, index: int, frame: int = 0) -> tuple[int, int]:
        """(time point, slice) of the 0-based `frame` of input instance `index`."""
        return divmod(self.offsets[index] + frame, self.depth)

    @property
    def timepoint(self) -> tuple[int, ...]:
        """Per input index: the time point of its first frame."""
        return tuple(self.slot(index)[0] for index in range(len(self.offsets)))

    @property
    def slice_index(self) -> tuple[int, ...]:
        """Per input index: the slice of its first frame within its time point."""
        return tuple(self.slot(index)[1] for index in range(len(self.offsets)))


def slice_order(headers: Sequence[Dataset], tolerance: float = POSITION_TOLERANCE_MM) -> SliceOrder:
    """The protocol's order of one series' instances (module docstring: the rule). Never raises for
    missing or malformed attributes: what cannot be read does not take part."""
    count = len(headers)
    if count == 0:
        return SliceOrder((), 1, 0, ())
    frames = [frame_count(ds) for ds in headers]
    ties = [_tie_key(ds, index) for index, ds in enumerate(headers)]
    temporal = _temporal_keys(headers)
    positions = _positions(headers, ties)
    if positions is None:
        order, timepoints = _without_geometry(headers, frames, ties)
    else:
        order, timepoints = _with_geometry(positions, frames, temporal, ties, tolerance)
    offsets = [0] * count
    running = 0
    for index in order:
        offsets[index] = running
        running += frames[index]
    return SliceOrder(tuple(order), timepoints, running // timepoints, tuple(offsets))


def _with_geometry(positions, frames, temporal, ties, tolerance) -> tuple[list[int], int]:
    group = _cluster(positions, tolerance)
    sizes = Counter(group)
    timepoints = next(iter(sizes.values())) if len(set(sizes.values())) == 1 else 1
    indices = range(len(positions))
    if timepoints > 1:
        rank = [0] * len(positions)
        for members in _members(group).values():
            for position, index in enumerate(sorted(members, key=lambda k: (temporal[k], ties[k]))):
                rank[index] = position
        order = sorted(indices, key=lambda k: (rank[k], group[k], ties[k]))
        if _frames_per_timepoint_equal(order, rank, frames):
            return order, timepoints
    return sorted(indices, key=lambda k: (group[k], temporal[k], ties[k])), 1


def _without_geometry(headers, frames, ties) -> tuple[list[int], int]:
    identifiers = [_number(ds.get("TemporalPositionIdentifier")) for ds in headers]
    indices = range(len(headers))
    if None not in identifiers and len(set(identifiers)) > 1:
        distinct = sorted(set(identifiers))
        rank = [distinct.index(value) for value in identifiers]
        order = sorted(indices, key=lambda k: (rank[k], ties[k]))
        if _frames_per_timepoint_equal(order, rank, frames):
            return order, len(distinct)
    return sorted(indices, key=lambda k: ties[k]), 1


def _frames_per_timepoint_equal(order, rank, frames) -> bool:
    per_timepoint: Counter[int] = Counter()
    for index in order:
        per_timepoint[rank[index]] += frames[index]
    return len(set(per_timepoint.values())) == 1


def _positions(headers, ties) -> list[float] | None:
    """Each instance's position along the series normal, or None when the series has no usable geometry."""
    geometries = [frame_geometry(ds, 0) for ds in headers]
    oriented = [k for k, g in enumerate(geometries) if g.normal is not None]
    if not oriented or any(g.position is None for g in geometries):
        return None
    normal = geometries[min(oriented, key=lambda k: ties[k])].normal
    return [g.along_normal(normal) for g in geometries]


def _cluster(values: list[float], tolerance: float) -> list[int]:
    """Per value, the rank of its position: values within `tolerance` of a neighbour share a rank."""
    ranked = sorted(range(len(values)), key=lambda k: values[k])
    group = [0] * len(values)
    current = 0
    for previous, index in zip([None, *ranked], ranked, strict=False):
        if previous is not None and values[index] - values[previous] > tolerance:
            current += 1
        group[index] = current
    return group


def _members(group: list[int]) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for index, value in enumerate(group):
        members.setdefault(value, []).append(index)
    return members


def _tie_key(ds: Dataset, index: int) -> tuple:
    number = _number(ds.get("InstanceNumber"))
    return (math.inf if number is None else number, str(ds.get("SOPInstanceUID", "") or ""), index)


# ---------------------------------------------------------------------------------------------------
# Time


def _temporal_position(ds: Dataset) -> float | None:
    value = _number(ds.get("TemporalPositionIdentifier"))
    if value is None:
        value = _number(frame_attribute(ds, 0, "FrameContentSequence", "TemporalPositionIndex"))
    return value


def _trigger_time(ds: Dataset) -> float | None:
    value = _number(ds.get("TriggerTime"))
    if value is None:
        value = _number(frame_attribute(ds, 0, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime"))
    return value


def _acquisition_time(ds: Dataset) -> float | None:
    """Seconds since year 0 (only differences matter), from the most precise attribute present."""
    value = ds.get("AcquisitionDateTime") or frame_attribute(ds, 0, "FrameContentSequence", "FrameAcquisitionDateTime")
    if value:
        return _datetime_seconds(str(value))
    date, time = ds.get("AcquisitionDate"), ds.get("AcquisitionTime")
    if time:
        return _datetime_seconds(str(date or "00000000") + str(time))
    return None


TEMPORAL_SOURCES: tuple[Callable[[Dataset], float | None], ...] = (
    _temporal_position, _trigger_time, _acquisition_time,
)


def _temporal_keys(headers: Sequence[Dataset]) -> list[tuple[float, ...]]:
    """Per instance, the values of the temporal sources that every instance of the series has."""
    columns = []
    for source in TEMPORAL_SOURCES:
        values = [source(ds) for ds in headers]
        if None not in values:
            columns.append(values)
    return [tuple(column[k] for column in columns) for k in range(len(headers))]


def _datetime_seconds(text: str) -> float | None:
    """DICOM DT 'YYYYMMDDHHMMSS.FFFFFF' (offset ignored; shorter forms allowed; old 'HH:MM:SS' tolerated)."""
    text = text.strip().split("+")[0].split("-")[0].replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit():
        return None
    whole = whole.ljust(14, "0")[:14]
    year, month, day = int(whole[0:4]), int(whole[4:6]), int(whole[6:8])
    hour, minute, second = int(whole[8:10]), int(whole[10:12]), int(whole[12:14])
    days = year * 372 + month * 31 + day  # monotonic, not calendar-exact: only the order matters
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
