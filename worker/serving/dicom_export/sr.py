"""Comprehensive 3D SRs (TID 1500 Measurement Reports) for everything a result says besides pixels.

Two reports, because OHIF 3.13's SR loader (extensions/cornerstone-dicom-sr, `_checkIfCanAddMeasurementsToDisplaySet`)
throws on any measurement group without spatial coordinates, and then shows none of the report; groups
without coordinates are what TID 1500 prescribes for segments and classifications (docs/dicom-outputs.md):

- the **measurement report**: what is drawn on an image. One TID 1410 (planar ROI) group per bounding box, a
  closed SCOORD POLYLINE on its image (and frame); one TID 1501 group per linear measurement, a Length
  (TID 300) in mm (in pixels on an image without PixelSpacing) inferred from exactly one SCOORD (pixel
  coordinates) or SCOORD3D (world) POLYLINE, the one child OHIF reads.
- the **findings report**: one TID 1411 (volumetric ROI) group per segment of every Segmentation, with the
  segment's volume when the model gave it (`<label>_volume_ml` in series_ml_json: SCT Volume, UCUM ml); one
  TID 1501 group per label looked for and not found on a series (Presence of property: Absent, DCM); lengths
  without a region; one TID 1501 group for study_ml_json and one per series of series_ml_json (strings and
  booleans as qualitative evaluations, numbers as measurements, `*_ml` numbers as volumes in ml); request
  options are never reported as results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.uid import generate_uid

from dicom_geometry import frame_geometry
from worker.sdk.study import Instance, Study
from worker.serving.dicom_export import codes, naming
from worker.serving.dicom_export.device import MANUFACTURER, Device
from worker.serving.dicom_export.seg import Absence, SegOutput
from worker.serving.dicom_export.sources import is_multiframe, source_dataset

VOLUME_KEY = re.compile(r"^(?P<label>.*?)[_ ]?(volume[_ ]?)?ml$", re.IGNORECASE)


class _Builder:
    def __init__(self, study: Study, device: Device) -> None:
        self.study = study
        self.device = device
        self.by_uid = {i.sop_instance_uid: i for i in study.instances}
        self.referenced: dict[str, Instance] = {}  # instances the content tree names: the SR's evidence
        self.groups: list = []
        self.names: list[str] = []  # what the groups are about, for the Series Description

    def named(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def tracking(self, name: str) -> hd.sr.TrackingIdentifier:
        self.named(re.sub(r" (1\.|\d+\.\d).*", "", name))  # "series classification <uid>": without the UID
        return hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name or "finding")  # TEXT: any length

    def image(self, uid: str, frame: int | None, kind=hd.sr.SourceImageForRegion):
        instance = self.by_uid[uid]
        self.referenced[uid] = instance
        frames = [frame or 1] if is_multiframe(instance) else None
        return kind(instance.header.SOPClassUID, uid, referenced_frame_numbers=frames)

    def sources(self, instances: list[Instance]):
        return [self.image(i.sop_instance_uid, None, hd.sr.SourceImageForMeasurementGroup) for i in instances] or None


class _Findings(_Builder):
    def segments(self, seg: SegOutput, volumes: dict[tuple[str, str], float]) -> None:
        for segment in seg.segments:
            volume = volumes.pop((seg.source_series_uid, segment.name.casefold()), None)
            measurements = None
            if volume is not None:
                measurements = [hd.sr.Measurement(codes.VOLUME, volume, codes.MILLILITRE)]
            self.groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=self.tracking(segment.label),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.dataset.SOPClassUID,
                    sop_instance_uid=seg.dataset.SOPInstanceUID,
                    segment_number=segment.number,
                    source_series=hd.sr.SourceSeriesForSegmentation(seg.source_series_uid),
                ),
                finding_type=segment.type,
                finding_category=segment.category,
                algorithm_id=self.device.sr_algorithm(),
                measurements=measurements,
            ))

    def absence(self, absence: Absence) -> None:
        """TID 1501: the label was looked for on these images and not found (no finding without pixels)."""
        self.groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=self.tracking(f"{absence.name}: not found"),
            finding_type=absence.type,
            finding_category=absence.category,
            algorithm_id=self.device.sr_algorithm(),
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.PRESENCE, codes.ABSENT)],
            source_images=self.sources(absence.instances),
        ))

    def volume(self, label: str, value: float, instances: list[Instance]) -> None:
        """A volume the model gave for a label that no segment of this answer carries: a group of its own."""
        category, kind = codes.label_codes(label)
        self.groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=self.tracking(f"{label} volume"),
            finding_type=kind,
            finding_category=category,
            algorithm_id=self.device.sr_algorithm(),
            measurements=[hd.sr.Measurement(codes.VOLUME, value, codes.MILLILITRE)],
            source_images=self.sources(instances),
        ))

    def classification(self, name: str, values: Mapping, instances: list[Instance] | None = None) -> None:
        evaluations, measurements = [], []
        for key, value in values.items():
            if isinstance(value, (str, bool)) and str(value).strip():
                evaluations.append(hd.sr.QualitativeEvaluation(codes.key_code(str(key)), codes.value_code(value)))
            elif isinstance(value, (int, float)) and math.isfinite(value):
                measurements.append(hd.sr.Measurement(codes.key_code(str(key)), float(value), codes.NO_UNITS))
        if not evaluations and not measurements:
            return
        self.groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=self.tracking(name),
            algorithm_id=self.device.sr_algorithm(),
            qualitative_evaluations=evaluations or None,
            measurements=measurements or None,
            source_images=self.sources(instances or []),
        ))


class _Regions(_Builder):
    def box(self, box: Mapping) -> None:
        (left, top), (right, bottom) = box["top_left"], box["bottom_right"]
        # A region is a closed polyline: SCOORD columns/rows with 0,0 the top-left corner of the image,
        # as the protocol's pixel coordinates.
        corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]], dtype=float)
        label = box.get("label", "bounding box")
        self.groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=self.tracking(label),
            referenced_region=hd.sr.ImageRegion(
                graphic_type="POLYLINE", graphic_data=corners,
                source_image=self.image(box["SOPInstanceUID"], box.get("frame_number")),
            ),
            finding_type=codes.label_codes(label)[1],
            algorithm_id=self.device.sr_algorithm(),
        ))

    def measurement(self, item: Mapping, findings: _Findings) -> None:
        """A length, here when it has a region to draw; in the findings report when it has none (world
        coordinates on a plane that contains the z axis)."""
        uid, frame = item["SOPInstanceUID"], item.get("frame_number")
        instance = self.by_uid[uid]
        geometry = frame_geometry(instance.header, (frame or 1) - 1 if is_multiframe(instance) else 0)
        start, end = [float(v) for v in item["start"]], [float(v) for v in item["end"]]
        coordinates, unit = None, codes.MILLIMETRE
        if item["coordinates_type"] == "world":
            points = [geometry.point_at_xy(*point) for point in (start, end)]
            if all(p is not None for p in points):
                length = float(np.linalg.norm(points[1] - points[0]))
                coordinates = hd.sr.CoordinatesForMeasurement3D(
                    graphic_type="POLYLINE", graphic_data=np.array(points),
                    frame_of_reference_uid=instance.header.FrameOfReferenceUID,
                )
            else:  # world x, y in mm, but no 3D point: the length is still right, without a region
                length = math.dist(start, end)
        else:
            spacing = geometry.pixel_spacing
            rows, columns = end[1] - start[1], end[0] - start[0]
            if spacing is None:
                length, unit = math.hypot(rows, columns), codes.PIXELS
            else:
                length = math.hypot(rows * spacing[0], columns * spacing[1])
            coordinates = hd.sr.CoordinatesForMeasurement(
                graphic_type="POLYLINE", graphic_data=np.array([start, end]), source_image=self.image(uid, frame),
            )
        label = item.get("label", "length")
        builder = self if coordinates is not None else findings
        # One child per length: the region it is inferred from (which names its image), or, without a
        # region, the image. OHIF reads a length's first child as its geometry.
        builder.groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=builder.tracking(label),
            finding_type=codes.label_codes(label)[1],
            algorithm_id=self.device.sr_algorithm(),
            measurements=[hd.sr.Measurement(
                name=codes.LENGTH, value=length, unit=unit,
                referenced_images=None if coordinates is not None else [
                    builder.image(uid, frame, hd.sr.SourceImageForMeasurement)],
                referenced_coordinates=[coordinates] if coordinates is not None else None,
            )],
        ))


def split_volumes(values: Mapping) -> tuple[dict, dict[str, float]]:
    """(the other values, {label: mL}) of a classification object: numbers whose key ends in "ml"
    (`bone_volume_ml`, `air_ml`) are volumes of the label before it."""
    rest, volumes = {}, {}
    for key, value in values.items():
        match = VOLUME_KEY.match(str(key))
        if match and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            volumes[match.group("label").strip("_ ") or "volume"] = float(value)
        else:
            rest[key] = value
    return rest, volumes


def structured_reports(result_json: Mapping, segs: list[SegOutput], absences: list[Absence], study: Study,
                       device: Device) -> list[tuple[str, hd.sr.Comprehensive3DSR, list[str]]]:
    """(part label, SR, notes) for the measurement report and the findings report, each only when it has content."""
    findings, regions = _Findings(study, device), _Regions(study, device)
    options = set(study.request) if isinstance(study.request, Mapping) else set()

    series_values: dict[str, dict] = {}
    volumes: dict[tuple[str, str], float] = {}
    free_volumes: list[tuple[str, float, str]] = []
    for uid, values in (result_json.get("series_ml_json") or {}).items():
        if isinstance(values, Mapping):
            rest, found = split_volumes(values)
            series_values[uid] = rest
            for label, value in found.items():
                volumes[(uid, label.casefold())] = value
                free_volumes.append((label, value, uid))

    for seg in segs:
        findings.segments(seg, volumes)
    for absence in absences:
        findings.absence(absence)
    for label, value, uid in free_volumes:
        if (uid, label.casefold()) in volumes:  # not taken by a segment
            findings.volume(label, value, _members(study, uid))
    for box in result_json.get("bounding_boxes_2d") or []:
        regions.box(box)
    for item in result_json.get("linear_measurements_2d") or []:
        regions.measurement(item, findings)
    study_values = result_json.get("study_ml_json")
    if isinstance(study_values, Mapping):
        # Request options (thresholds a model echoes back) are not results: never reported as such.
        rest, found = split_volumes({k: v for k, v in study_values.items() if k not in options})
        for label, value in found.items():
            findings.volume(label, value, [])
        findings.classification("study classification", rest)
    for uid, values in series_values.items():
        findings.classification(f"series classification {uid}", values, _members(study, uid))

    command = study.command or ""
    reports = []
    for label, builder, kind in (("measurement report", regions, "measurements"),
                                 ("findings report", findings, "findings")):
        if builder.groups:
            notes: list[str] = []
            description = naming.description(device.name, command, builder.names, kind)
            report = _report(builder, study, device, segs if builder is findings else [], description, notes)
            reports.append((label, report, notes))
    return reports


def _members(study: Study, series_uid: str) -> list[Instance]:
    return [i for i in study.instances if i.series_instance_uid == series_uid]


def _report(builder: _Builder, study: Study, device: Device, segs: list[SegOutput], description: str,
            notes: list[str]) -> hd.sr.Comprehensive3DSR:
    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device.uid, name=device.name, manufacturer_name=MANUFACTURER, model_name=device.name,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=dcm_codes.SCT.ImagingProcedure,
        imaging_measurements=builder.groups,
    )
    # highdicom copies patient and study from the first evidence item: what was done to its values is noted
    instances = list(builder.referenced.values()) or [study.instances[0]]
    evidence = [source_dataset(i, notes, values=k == 0) for k, i in enumerate(instances)]
    if builder.referenced:
        evidence += [s.dataset for s in segs]
    else:  # only study-level values: the study's first image names patient and study
        evidence = evidence[:1] + [s.dataset for s in segs]
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=naming.SERIES_NUMBERS.next(),
        series_description=description,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        is_complete=True,
        coding_schemes=codes.CODING_SCHEMES,
        **device.equipment(),
    )
