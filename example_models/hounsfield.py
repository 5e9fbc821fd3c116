"""A model that reads pixels: bone and internal air of CT series by Hounsfield thresholds.

`python -m worker --model example_models.hounsfield`. For every CT series it decodes each frame, whatever
the transfer syntax (pydicom with the pylibjpeg plugins: native little/big endian, RLE, JPEG, JPEG 2000;
one no installed decoder handles is an UnsupportedStudy, 422), applies the rescale to Hounsfield units
and labels voxels:

- 1 "bone": HU >= 300 (request option "bone_min_hu");
- 2 "air": HU <= -400 (option "air_max_hu") inside the body: air components that touch the edge of a slice
  are the air around the patient and are left out; what remains is lungs, airways and gas;

then keeps the 3D connected components of at least 10 voxels (option "min_voxels"). It answers with a
numeric label mask per series, a bounding box (on its largest slice) for each of the 10 largest components
of each label, and each label's volume in mL in the study and series JSON. Frames are read one at a time
into the mask, so memory stays near the mask's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.pixels import iter_pixels

from dicom_geometry import frame_attribute
from example_models.components import Component, keep_components
from worker import BoundingBox, InvalidInput, Mask, Model, Result, Series, Study, UnsupportedStudy

BONE, AIR = 1, 2
LABEL_MAP = {BONE: "bone", AIR: "air"}
MAX_BOXES = 10  # per label and series: the largest components


@dataclass(frozen=True)
class Options:
    bone_min_hu: float = 300.0
    air_max_hu: float = -400.0
    min_voxels: int = 10

    @classmethod
    def of(cls, request: dict) -> Options:
        values = {}
        for name, kind in (("bone_min_hu", float), ("air_max_hu", float), ("min_voxels", int)):
            if name in request:
                value = request[name]
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if not number or (kind is int and value != int(value)):
                    raise InvalidInput(f'request option "{name}" must be a {kind.__name__}, got {value!r}')
                values[name] = kind(value)
        options = cls(**values)
        if options.air_max_hu >= options.bone_min_hu:
            raise InvalidInput("air_max_hu must be below bone_min_hu")
        return options


def is_ct(series: Series) -> bool:
    """Hounsfield units need CT (or a rescale that says HU) and one sample per pixel."""
    header = series.instances[0].header
    hu = header.get("Modality") == "CT" or header.get("RescaleType") == "HU"
    return hu and int(header.get("SamplesPerPixel", 1)) == 1


def hounsfield(frame: np.ndarray, header: Dataset, index: int) -> np.ndarray:
    slope = frame_attribute(header, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = frame_attribute(header, index, "PixelValueTransformationSequence", "RescaleIntercept")
    return frame.astype(np.float32) * np.float32(1.0 if slope is None else slope) + np.float32(intercept or 0.0)


def voxel_ml(series: Series) -> float | None:
    """The volume of one voxel in mL: pixel spacing times the distance between slice positions."""
    first = series.instances[0].header
    spacing = frame_attribute(first, 0, "PixelMeasuresSequence", "PixelSpacing")
    if not spacing or len(spacing) != 2:
        return None
    positions = []
    for instance in series.instances[: series.depth]:
        for index in range(instance.frames):
            position = frame_attribute(instance.header, index, "PlanePositionSequence", "ImagePositionPatient")
            if position and len(position) == 3:
                positions.append([float(v) for v in position])
    if len(positions) >= 2 and len(positions) == series.depth:
        steps = np.linalg.norm(np.diff(np.array(positions), axis=0), axis=1)
        thickness = float(np.median(steps))
    else:  # one slice (or positions missing): the slice's own thickness
        thickness = frame_attribute(first, 0, "PixelMeasuresSequence", "SpacingBetweenSlices") or \
            frame_attribute(first, 0, "PixelMeasuresSequence", "SliceThickness")
        if not thickness:
            return None
    return float(spacing[0]) * float(spacing[1]) * float(thickness) / 1000.0


class HounsfieldModel(Model):
    name = "hounsfield"
    version = "1.0"
    commands = ("segment-hounsfield",)
    default_command = "segment-hounsfield"

    def infer(self, study: Study) -> Result:
        if not study.instances:
            raise InvalidInput("the request holds no DICOM instance; send a CT series")
        options = Options.of(study.request)
        ct = [s for s in study.series if is_ct(s)]
        ct_uids = {s.uid for s in ct}
        if not ct:
            raise UnsupportedStudy("no CT series in the study: Hounsfield thresholds need CT images")
        parts, boxes, series_json, volumes = [], [], {}, {}
        for series in ct:
            labels, components = self.segment(series, options, study)
            if study.is_cancelled():
                return Result()  # nobody waits for the answer any more
            parts.append(Mask("hounsfield labels", labels[0] if series.timepoints == 1 else labels,
                              "numeric_label_mask", series_instance_uid=series.uid, label_map=LABEL_MAP))
            boxes += self.boxes(series, components)
            voxel = voxel_ml(series)
            counts = {name: int(np.count_nonzero(labels == value)) for value, name in LABEL_MAP.items()}
            summary: dict = {f"{name}_components": len(components[value]) for value, name in LABEL_MAP.items()}
            if voxel is not None:
                # a 4D series: the mean over its time points
                ml = {name: round(count * voxel / series.timepoints, 3) for name, count in counts.items()}
                volumes[series.uid] = ml
                summary.update({f"{name}_volume_ml": value for name, value in ml.items()})
            series_json[series.uid] = summary
        return Result(
            parts=parts,
            bounding_boxes=boxes,
            study_ml_json={
                "volumes_ml": volumes,
                # the options in force, nested: settings, not findings (a DICOM report carries no nested value)
                "options": {"bone_min_hu": options.bone_min_hu, "air_max_hu": options.air_max_hu,
                            "min_voxels": options.min_voxels},
                "skipped_series": [s.uid for s in study.series if s.uid not in ct_uids],
            },
            series_ml_json=series_json,
        )

    def segment(self, series: Series, options: Options, study: Study):
        """(labels (timepoints, depth, height, width), {label: [Component per time point]}), frame by frame."""
        labels = np.zeros(series.mask_shape(), dtype=np.uint8)
        planes = labels.reshape(-1, series.rows, series.columns)  # a view: the protocol's plane order
        plane = 0
        for instance in series.instances:
            for index, frame in enumerate(decoded_frames(instance)):  # one decoded frame in memory at a time
                if study.is_cancelled():
                    return labels, {}
                if frame.shape != (series.rows, series.columns):
                    raise UnsupportedStudy(f"{instance.label} has frames of {frame.shape}, "
                                           f"not the series' {series.rows} x {series.columns}")
                hu = hounsfield(frame, instance.header, index)
                planes[plane][hu >= options.bone_min_hu] = BONE
                planes[plane][hu <= options.air_max_hu] = AIR
                plane += 1
        components: dict[int, list[tuple[int, Component]]] = {BONE: [], AIR: []}
        for timepoint, volume in enumerate(labels):
            for value in (BONE, AIR):
                found = keep_components(volume, value, options.min_voxels, drop_border=value == AIR)
                components[value] += [(timepoint, c) for c in found]
        return labels, components

    def boxes(self, series: Series, components) -> list[BoundingBox]:
        frames = [(i, f + 1 if i.frames > 1 else None) for i in series.instances for f in range(i.frames)]
        boxes = []
        for value, name in LABEL_MAP.items():
            largest = sorted(components.get(value, []), key=lambda tc: -tc[1].voxels)[:MAX_BOXES]
            for timepoint, component in largest:
                instance, frame = frames[timepoint * series.depth + component.slice_index]
                left, top, right, bottom = component.box
                boxes.append(BoundingBox(name, instance.sop_instance_uid, [left, top], [right, bottom], frame,
                                         extra={"voxels": component.voxels}))
        return boxes


def decoded_frames(instance):
    """The instance's frames, decoded one at a time. A transfer syntax that no installed decoder handles
    (MPEG, HEVC, ...) is a limit of this model for this study (422), not a failure of the model (500)."""
    try:
        yield from iter_pixels(instance.path)
    except (NotImplementedError, RuntimeError) as error:
        syntax = instance.header.file_meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", "") or "an unknown transfer syntax"
        raise UnsupportedStudy(f"{instance.label} is encoded as {name} ({syntax}), which "
                               f"this model cannot decode ({error})") from error
