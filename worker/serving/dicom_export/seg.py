"""Arterys mask parts as DICOM Segmentations: one Segmentation per source unit, each in a series of its own.

A unit is what one Segmentation may derive from: the single-frame images of one series at one time point,
or one multi-frame image at one time point (a Segmentation may not repeat a plane position, and derives from
one series of single-frame images or one multi-frame image). Every mask part of an answer that covers a unit
adds its segments to that unit's Segmentation, so a 2D mask per slice gives one Segmentation for the series,
not one per slice, and a viewer that shows one Segmentation per series (OHIF shows a SEG series' first
instance) shows every finding. Segments of the same label from several parts are one segment.

- boolean_mask: BINARY, one segment (any non-zero byte is inside).
- numeric_label_mask: BINARY, one segment per label_map entry.
- probability_mask, heatmap: BINARY at the part's probability_threshold (0.5 when it has none): inside where
  mask / 255 >= threshold, the rule the test tool draws with. FRACTIONAL (PROBABILITY, stored bytes = the
  mask's bytes) when the request asks for it; a unit's boolean and label masks then stay in a BINARY SEG.

A segment with no pixel on a unit is left out of its Segmentation (and a unit with no segment left gives no
Segmentation): the report says it was looked for and not found (`Absence`). Only frames with something in
them are written, and only their source images referenced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.uid import generate_uid

from arterys_http.label_colours import RGB
from worker.sdk.study import Instance, Series, Study
from worker.serving.dicom_export import codes, naming
from worker.serving.dicom_export.device import Device
from worker.serving.dicom_export.sources import (
    Chunk,
    DicomExportError,
    Plane,
    check_geometry,
    is_multiframe,
    plane_positions,
    source_dataset,
    volume_chunks,
)

FRACTIONAL_TYPES = ("probability_mask", "heatmap")
DEFAULT_THRESHOLD = 0.5  # a heatmap (or a probability mask without probability_threshold)


@dataclass
class SegmentInfo:
    number: int  # 1..N in the SEG
    label: str  # Segment Label: a LO, 64 characters at most
    name: str  # the label as the model wrote it
    category: object
    type: object
    colour: RGB


@dataclass
class SegOutput:
    """A Segmentation and what the result JSON and the SR say about it."""

    dataset: hd.seg.Segmentation
    label: str
    source_series_uid: str
    segments: list[SegmentInfo]
    reference: dict = field(default_factory=dict)  # which input it covers, for the part's JSON
    conformance: dict | None = None  # the contributing mask parts' dicomConformance
    notes: list[str] = field(default_factory=list)


@dataclass
class Absence:
    """A label looked for on some images that has no pixel there."""

    name: str
    category: object
    type: object
    series_uid: str
    instances: list[Instance]


@dataclass
class _Layer:
    """One segment of one unit while masks are gathered: its planes with something in them."""

    name: str
    fractional: bool
    planes: dict[int, np.ndarray] = field(default_factory=dict)  # plane index in the unit -> (rows, cols)
    looked_at: set[int] = field(default_factory=set)

    def add(self, index: int, plane: np.ndarray) -> None:
        self.looked_at.add(index)
        if not plane.any():
            return
        current = self.planes.get(index)
        self.planes[index] = plane if current is None else np.maximum(current, plane)


@dataclass
class _Unit:
    chunk: Chunk
    series: Series
    reference: dict
    where: str
    layers: dict[tuple[str, bool], _Layer] = field(default_factory=dict)
    conformance: list = field(default_factory=list)

    def layer(self, name: str, fractional: bool) -> _Layer:
        return self.layers.setdefault((name, fractional), _Layer(name, fractional))


def mask_array(part: dict, binary) -> np.ndarray:
    """The mask's bytes as (planes, height, width) in the protocol's order: no copy."""
    shape = part["binary_data_shape"]
    planes = shape.get("timepoints", 1) * shape.get("depth", 1)
    return np.frombuffer(binary, dtype=np.uint8).reshape(planes, shape["height"], shape["width"])


def segment_names(part: dict) -> list[tuple[int | None, str]]:
    """(label value or None, name) of each segment a mask part holds, label values ascending."""
    if part["binary_type"] == "numeric_label_mask":
        return sorted((int(value), name) for value, name in part["label_map"].items())
    return [(None, part["label"])]


def is_inside(plane: np.ndarray, threshold: float) -> np.ndarray:
    """Where a probability (mask byte / 255) reaches the threshold: the protocol's probability_threshold."""
    return plane.astype(np.float64) / 255.0 >= threshold


class _Units:
    """The answer's units, in the order their first mask arrives, and where each source plane belongs."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self.units: dict[tuple, _Unit] = {}
        self._planes: dict[str, dict[tuple[str, int | None], tuple[tuple, int]]] = {}

    def _unit(self, series: Series, chunk: Chunk, chunks: int, where: str) -> tuple:
        first = chunk.planes[0]
        key = (series.uid, chunk.timepoint, first.instance.sop_instance_uid if first.frame is not None else None)
        if key not in self.units:
            reference: dict = {"SeriesInstanceUID": series.uid}
            if series.timepoints > 1:
                reference["timepoint"] = chunk.timepoint + 1
            if first.frame is not None and chunks > series.timepoints:
                reference["SOPInstanceUID"] = first.instance.sop_instance_uid
            self.units[key] = _Unit(chunk, series, reference, where)
        return key

    def of_series(self, series: Series, timepoints: int, depth: int, where: str) -> list[tuple[tuple, Chunk]]:
        chunks = volume_chunks(series, timepoints, depth)
        return [(self._unit(series, chunk, len(chunks), where), chunk) for chunk in chunks]

    def of_plane(self, instance: Instance, frame: int | None, where: str) -> tuple[tuple, int]:
        """(unit key, plane index in the unit) of one source frame (a 2D mask's image)."""
        series = self.study.series_by_uid(instance.series_instance_uid)
        if series.uid not in self._planes:
            located = {}
            for key, chunk in self.of_series(series, series.timepoints, series.depth, where):
                for index, plane in enumerate(chunk.planes):
                    located[(plane.instance.sop_instance_uid, plane.frame)] = (key, index)
            self._planes[series.uid] = located
        return self._planes[series.uid][(instance.sop_instance_uid, frame)]


def segment_planes(plane: np.ndarray, kind: str, names, fractional: bool, threshold: float):
    """(segment name, plane) for each segment of a mask part on one of its planes: 0/1, or the mask's bytes
    for a FRACTIONAL segment."""
    for value, name in names:
        if kind == "numeric_label_mask":
            yield name, (plane == value).astype(np.uint8)
        elif kind == "boolean_mask":
            yield name, (plane != 0).astype(np.uint8)
        elif fractional:
            yield name, plane
        else:
            yield name, is_inside(plane, threshold).astype(np.uint8)


def gather(parts: list[tuple[int, dict, object]], study: Study, fractional_asked: bool) -> _Units:
    """Every mask plane of the answer, per unit and segment. `parts`: (index in parts, part, binary)."""
    units = _Units(study)
    by_uid = {i.sop_instance_uid: i for i in study.instances}  # a 2D mask per image: no scan per mask
    for index, part, binary in parts:
        where = f"parts[{index}] ({part.get('label')!r})"
        array = mask_array(part, binary)
        kind = part["binary_type"]
        fractional = fractional_asked and kind in FRACTIONAL_TYPES
        threshold = part.get("probability_threshold")
        threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        names = segment_names(part)
        shape = part["binary_data_shape"]
        if "depth" in shape or "timepoints" in shape:
            series = study.series_by_uid(part["SeriesInstanceUID"])
            placed = [(key, chunk.start + offset, offset)
                      for key, chunk in units.of_series(series, shape.get("timepoints", 1), shape["depth"], where)
                      for offset in range(len(chunk.planes))]
        else:
            image = part["dicom_image"]
            instance = by_uid[image["SOPInstanceUID"]]
            frame = (image.get("frame_number") or 1) if is_multiframe(instance) else None
            key, plane_index = units.of_plane(instance, frame, where)
            placed = [(key, 0, plane_index)]
        touched = set()
        for key, mask_index, plane_index in placed:
            unit = units.units[key]
            for name, plane in segment_planes(array[mask_index], kind, names, fractional, threshold):
                unit.layer(name, fractional).add(plane_index, plane)
            touched.add(key)
        for key in touched:
            conformance = part.get("dicomConformance")
            if conformance and conformance not in units.units[key].conformance:
                units.units[key].conformance.append(conformance)
    return units


def _merged_conformance(items: list) -> dict | None:
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    merged: dict = {}
    for item in items:
        for key, entries in item.items():
            target = merged.setdefault(key, [])
            target.extend(e for e in entries if e not in target)
    return merged


def segmentations(parts: list[tuple[int, dict, object]], study: Study, device: Device, command: str,
                  colours: dict[str, RGB], fractional_asked: bool = False) -> tuple[list[SegOutput], list[Absence]]:
    """The Segmentations of an answer's mask parts, one per unit (two when fractional segments are asked for
    beside binary ones), and the labels found nowhere on a unit they were looked for on."""
    outputs, absences = [], []
    for unit in gather(parts, study, fractional_asked).units.values():
        for fractional in (False, True):
            layers = [layer for (_, frac), layer in unit.layers.items() if frac == fractional]
            found = [layer for layer in layers if layer.planes]
            for layer in layers:
                if not layer.planes:
                    category, kind = codes.label_codes(layer.name)
                    instances = list({unit.chunk.planes[i].instance.sop_instance_uid: unit.chunk.planes[i].instance
                                      for i in sorted(layer.looked_at)}.values())
                    absences.append(Absence(layer.name, category, kind, unit.series.uid, instances))
            if found:
                outputs.append(_segmentation(unit, found, fractional, study, device, command, colours))
    return outputs, absences


def _segmentation(unit: _Unit, layers: list[_Layer], fractional: bool, study: Study, device: Device, command: str,
                  colours: dict[str, RGB]) -> SegOutput:
    indices = sorted(set().union(*(layer.planes for layer in layers)))
    planes = [unit.chunk.planes[i] for i in indices]
    check_geometry(planes, unit.where)
    first = planes[0].instance
    pixels = np.zeros((len(indices), first.rows, first.columns, len(layers)),
                      dtype=np.float32 if fractional else np.uint8)
    for segment, layer in enumerate(layers):
        for row, index in enumerate(indices):
            plane = layer.planes.get(index)
            if plane is not None:
                # float32 v/255 times 255 rounds back to exactly v: the stored bytes are the mask's bytes
                pixels[row, :, :, segment] = plane.astype(np.float32) / np.float32(255) if fractional else plane
    segments = []
    for number, layer in enumerate(layers, start=1):
        category, kind = codes.label_codes(layer.name)
        segments.append(SegmentInfo(number, codes.long_string(layer.name), layer.name, category, kind,
                                    colours[layer.name]))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s.number,
            segment_label=s.label,
            segmented_property_category=s.category,
            segmented_property_type=s.type,
            algorithm_type="AUTOMATIC",
            algorithm_identification=device.seg_algorithm(),
            display_color=hd.color.CIELabColor.from_rgb(*s.colour),
        )
        for s in segments
    ]
    names = [s.name for s in segments]
    notes: list[str] = []
    try:
        dataset = hd.seg.Segmentation(
            pixel_array=pixels,
            segmentation_type="FRACTIONAL" if fractional else "BINARY",
            fractional_type="PROBABILITY" if fractional else None,
            max_fractional_value=255,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=naming.SERIES_NUMBERS.next(),
            series_description=naming.description(device.name, command, names),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            content_label=naming.content_label(names),
            content_description=naming.description("", command, names),
            content_creator_name=naming.person_name(device.name),
            coding_schemes=codes.CODING_SCHEMES,
            **_sources(planes, notes),
            **device.equipment(),
        )
    except ValueError as error:
        raise DicomExportError(f"{unit.where}: highdicom cannot make a Segmentation of it: {error}") from error
    if "FrameOfReferenceUID" not in dataset:
        # General Image: without a frame of reference, Patient Orientation (Type 2C) says which way is up.
        dataset.PatientOrientation = first.header.get("PatientOrientation", "")
    return SegOutput(dataset, naming.listing(names, 64), unit.series.uid, segments, dict(unit.reference),
                     _merged_conformance(unit.conformance), notes)


def _sources(planes: list[Plane], notes: list[str]) -> dict:
    """source_images (and plane_positions when a multi-frame image is only partly covered); what was done to
    the first source's values (highdicom copies patient and study from it) is added to `notes`."""
    first = planes[0]
    if first.frame is None:
        return {"source_images": [source_dataset(p.instance, notes, values=k == 0) for k, p in enumerate(planes)]}
    dataset = source_dataset(first.instance, notes)
    whole = [p.frame for p in planes] == list(range(1, first.instance.frames + 1))
    if whole or "FrameOfReferenceUID" not in dataset:
        return {"source_images": [dataset]}
    return {"source_images": [dataset], "plane_positions": plane_positions(dataset, planes)}


