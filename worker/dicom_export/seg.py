"""Arterys mask parts as DICOM Segmentations.

One mask part gives one Segmentation, or one per time point of a 4D mask (and one per multi-frame instance
when a series holds several), because a Segmentation's planes derive from one series of single-frame images
or one multi-frame image and may not repeat a position. Every SEG frame is tied to its source frame:
highdicom copies the frame of reference, orientation, pixel spacing and plane position, and writes the
source image (and frame) into each frame's Derivation Image Sequence.

- boolean_mask: BINARY, one segment (any non-zero byte is inside).
- numeric_label_mask: BINARY, one segment per label_map entry, numbered 1..N in order of label value.
- probability_mask, heatmap: FRACTIONAL (PROBABILITY), stored values 0..255 = the mask's bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.uid import generate_uid

from worker.dicom_export import codes
from worker.dicom_export.device import Device
from worker.dicom_export.sources import (
    Chunk,
    DicomExportError,
    Plane,
    check_geometry,
    is_multiframe,
    plane_positions,
    source_dataset,
    volume_chunks,
)
from worker.study import Instance, Study

FRACTIONAL_TYPES = ("probability_mask", "heatmap")
SEG_SERIES_NUMBER = 9901  # far from scanner series numbers, so viewers list it apart


@dataclass
class SegmentInfo:
    number: int  # 1..N in the SEG
    label: str  # Segment Label: a LO, 64 characters at most
    category: object
    type: object


@dataclass
class SegOutput:
    """A Segmentation and what the result JSON and the SR say about it."""

    dataset: hd.seg.Segmentation
    label: str
    source_series_uid: str
    segments: list[SegmentInfo]
    reference: dict = field(default_factory=dict)  # which input it covers, for the part's JSON


def mask_array(part: dict, binary) -> np.ndarray:
    """The mask's bytes as (planes, height, width) in the protocol's order: no copy."""
    shape = part["binary_data_shape"]
    planes = shape.get("timepoints", 1) * shape.get("depth", 1)
    return np.frombuffer(binary, dtype=np.uint8).reshape(planes, shape["height"], shape["width"])


def segments_of(part: dict) -> list[SegmentInfo]:
    if part["binary_type"] == "numeric_label_mask":
        items = sorted(((int(value), name) for value, name in part["label_map"].items()))
        return [SegmentInfo(n, codes.long_string(name), *codes.label_codes(name))
                for n, (_, name) in enumerate(items, start=1)]
    return [SegmentInfo(1, codes.long_string(part["label"]), *codes.label_codes(part["label"]))]


def seg_pixels(part: dict, planes: np.ndarray) -> np.ndarray:
    """What highdicom expects: 0/1 (or 0..N segment numbers) for BINARY, floats 0..1 for FRACTIONAL."""
    kind = part["binary_type"]
    if kind in FRACTIONAL_TYPES:
        # float32 v/255 times 255 rounds back to exactly v, so the stored bytes are the mask's bytes.
        return planes.astype(np.float32) / np.float32(255)
    if kind == "numeric_label_mask":
        lookup = np.zeros(256, dtype=np.uint8)
        values = sorted(int(v) for v in part["label_map"])
        lookup[values] = np.arange(1, len(values) + 1, dtype=np.uint8)  # label values -> segments 1..N
        return lookup[planes]
    return (planes != 0).astype(np.uint8)


def _content_label(label: str) -> str:
    """Content Label is a CS: upper case, digits, underscore and space, 16 characters at most."""
    text = re.sub(r"[^A-Z0-9_ ]+", "_", label.upper())[:16].strip("_ ")
    return text or "SEGMENTATION"


def _chunk_planes(part: dict, study: Study) -> list[tuple[Chunk, dict]]:
    shape = part["binary_data_shape"]
    if "depth" in shape or "timepoints" in shape:
        series = study.series_by_uid(part["SeriesInstanceUID"])
        timepoints = shape.get("timepoints", 1)
        chunks = volume_chunks(series, timepoints, shape["depth"])
        references = []
        for chunk in chunks:
            reference: dict = {"SeriesInstanceUID": series.uid}
            if timepoints > 1:
                reference["timepoint"] = chunk.timepoint + 1
            if chunk.planes[0].frame is not None and len(chunks) > timepoints:
                reference["SOPInstanceUID"] = chunk.planes[0].instance.sop_instance_uid
            references.append(reference)
        return list(zip(chunks, references, strict=True))
    image = part["dicom_image"]
    instance = next(i for i in study.instances if i.sop_instance_uid == image["SOPInstanceUID"])
    frame = image.get("frame_number") or 1
    plane = Plane(instance, frame if is_multiframe(instance) else None)
    reference = {"SeriesInstanceUID": instance.series_instance_uid, "SOPInstanceUID": instance.sop_instance_uid}
    if plane.frame is not None:
        reference["frame_number"] = frame
    return [(Chunk([plane], start=0), reference)]


class SeriesUids:
    """The SEG series of one answer: one per frame of reference of the sources, since every instance of a
    series shares one frame of reference (PS3.3 C.7.4.1.1.1); sources without one share a series."""

    def __init__(self) -> None:
        self._by_frame_of_reference: dict[str, str] = {}

    def of(self, source: Instance) -> str:
        frame_of_reference = str(source.header.get("FrameOfReferenceUID", ""))
        return self._by_frame_of_reference.setdefault(frame_of_reference, generate_uid())


def segmentations(part: dict, binary, study: Study, device: Device, series_uids: SeriesUids, first_number: int,
                  where: str) -> list[SegOutput]:
    """The Segmentation(s) of one mask part; instance numbers start at `first_number`."""
    array = mask_array(part, binary)
    segments = segments_of(part)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s.number,
            segment_label=s.label,
            segmented_property_category=s.category,
            segmented_property_type=s.type,
            algorithm_type="AUTOMATIC",
            algorithm_identification=device.seg_algorithm(),
        )
        for s in segments
    ]
    fractional = part["binary_type"] in FRACTIONAL_TYPES
    pieces = _chunk_planes(part, study)
    outputs = []
    for number, (chunk, reference) in enumerate(pieces, start=first_number):
        check_geometry(chunk.planes, where)
        planes = array[chunk.start : chunk.start + len(chunk.planes)]
        label = part["label"]
        if len(pieces) > 1:
            label += f" [{number - first_number + 1}/{len(pieces)}]"
        try:
            dataset = hd.seg.Segmentation(
                pixel_array=seg_pixels(part, planes),
                segmentation_type="FRACTIONAL" if fractional else "BINARY",
                fractional_type="PROBABILITY" if fractional else None,
                max_fractional_value=255,
                segment_descriptions=descriptions,
                series_instance_uid=series_uids.of(chunk.planes[0].instance),
                series_number=SEG_SERIES_NUMBER,
                series_description=f"{device.name} segmentations"[:64],
                sop_instance_uid=generate_uid(),
                instance_number=number,
                content_label=_content_label(part["label"]),
                content_description=codes.long_string(label),
                coding_schemes=codes.CODING_SCHEMES,
                **_sources(chunk),
                **device.equipment(),
            )
        except ValueError as error:
            raise DicomExportError(f"{where}: highdicom cannot make a Segmentation of it: {error}") from error
        if "FrameOfReferenceUID" not in dataset:
            # General Image: without a frame of reference, Patient Orientation (Type 2C) says which way is up.
            dataset.PatientOrientation = chunk.planes[0].instance.header.get("PatientOrientation", "")
        outputs.append(SegOutput(dataset, label, reference["SeriesInstanceUID"], segments, reference))
    return outputs


def _sources(chunk: Chunk) -> dict:
    """source_images (and plane_positions when a multi-frame image is only partly covered)."""
    first = chunk.planes[0]
    if first.frame is None:
        return {"source_images": [source_dataset(p.instance) for p in chunk.planes]}
    dataset = source_dataset(first.instance)
    whole = [p.frame for p in chunk.planes] == list(range(1, first.instance.frames + 1))
    if whole or "FrameOfReferenceUID" not in dataset:
        return {"source_images": [dataset]}
    return {"source_images": [dataset], "plane_positions": plane_positions(dataset, chunk.planes)}
