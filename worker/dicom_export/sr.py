"""One Comprehensive 3D SR (TID 1500 Measurement Report) for everything a result says besides pixels.

Measurement groups, in this order:
- one TID 1411 (volumetric ROI) group per segment of every Segmentation, referencing the SEG's segment;
- one TID 1410 (planar ROI) group per bounding box: a closed SCOORD POLYLINE on its image (and frame);
- one TID 1501 group per linear measurement: a Length (TID 300) in mm when the image has PixelSpacing (in
  pixels otherwise), inferred from an SCOORD POLYLINE (pixel coordinates) or SCOORD3D POLYLINE (world);
- one TID 1501 group for study_ml_json and one per series of series_ml_json: strings and booleans as
  qualitative evaluations (CODE), numbers as measurements without units; other values are not carried.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.uid import generate_uid

from worker.dicom_export import codes
from worker.dicom_export.device import MANUFACTURER, Device
from worker.dicom_export.geometry import frame_plane, lift_to_plane, pixel_spacing
from worker.dicom_export.seg import SegOutput
from worker.dicom_export.sources import is_multiframe, source_dataset
from worker.study import Instance, Study

SR_SERIES_NUMBER = 9902


class _Builder:
    def __init__(self, study: Study, device: Device) -> None:
        self.study = study
        self.device = device
        self.by_uid = {i.sop_instance_uid: i for i in study.instances}
        self.referenced: dict[str, Instance] = {}  # instances the content tree names: the SR's evidence
        self.groups: list = []

    def tracking(self, name: str) -> hd.sr.TrackingIdentifier:
        return hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name or "finding")  # TEXT: any length

    def image(self, uid: str, frame: int | None, kind=hd.sr.SourceImageForRegion):
        instance = self.by_uid[uid]
        self.referenced[uid] = instance
        frames = [frame or 1] if is_multiframe(instance) else None
        return kind(instance.header.SOPClassUID, uid, referenced_frame_numbers=frames)

    # ------------------------------------------------------------------------------------- groups

    def segments(self, seg: SegOutput) -> None:
        for segment in seg.segments:
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
            ))

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

    def measurement(self, item: Mapping) -> None:
        uid, frame = item["SOPInstanceUID"], item.get("frame_number")
        instance = self.by_uid[uid]
        plane_frame = (frame or 1) if is_multiframe(instance) else None
        start, end = [float(v) for v in item["start"]], [float(v) for v in item["end"]]
        coordinates, unit = None, codes.MILLIMETRE
        if item["coordinates_type"] == "world":
            plane = frame_plane(instance, plane_frame)
            points = [lift_to_plane(*p, plane) for p in (start, end)] if plane else [None]
            if all(p is not None for p in points):
                length = float(np.linalg.norm(points[1] - points[0]))
                coordinates = hd.sr.CoordinatesForMeasurement3D(
                    graphic_type="POLYLINE", graphic_data=np.array(points),
                    frame_of_reference_uid=instance.header.FrameOfReferenceUID,
                )
            else:  # world x, y in mm, but no 3D point: the length is still right, without a region
                length = math.dist(start, end)
        else:
            spacing = pixel_spacing(instance, plane_frame)
            rows, columns = end[1] - start[1], end[0] - start[0]
            if spacing is None:
                length, unit = math.hypot(rows, columns), codes.PIXELS
            else:
                length = math.hypot(rows * spacing[0], columns * spacing[1])
            coordinates = hd.sr.CoordinatesForMeasurement(
                graphic_type="POLYLINE", graphic_data=np.array([start, end]), source_image=self.image(uid, frame),
            )
        label = item.get("label", "length")
        self.groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=self.tracking(label),
            finding_type=codes.label_codes(label)[1],
            algorithm_id=self.device.sr_algorithm(),
            measurements=[hd.sr.Measurement(
                name=codes.LENGTH, value=length, unit=unit,
                referenced_images=[self.image(uid, frame, hd.sr.SourceImageForMeasurement)],
                referenced_coordinates=[coordinates] if coordinates is not None else None,
            )],
        ))

    def classification(self, name: str, values, instances: list[Instance] | None = None) -> None:
        if not isinstance(values, Mapping):
            return
        evaluations, measurements = [], []
        for key, value in values.items():
            if isinstance(value, (str, bool)) and str(value).strip():
                evaluations.append(hd.sr.QualitativeEvaluation(codes.key_code(str(key)), codes.value_code(value)))
            elif isinstance(value, (int, float)) and math.isfinite(value):
                measurements.append(hd.sr.Measurement(codes.key_code(str(key)), float(value), codes.NO_UNITS))
        if not evaluations and not measurements:
            return
        sources = None
        if instances:
            sources = [self.image(i.sop_instance_uid, None, hd.sr.SourceImageForMeasurementGroup)
                       for i in instances]
        self.groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=self.tracking(name),
            algorithm_id=self.device.sr_algorithm(),
            qualitative_evaluations=evaluations or None,
            measurements=measurements or None,
            source_images=sources,
        ))


def structured_report(result_json: Mapping, segs: list[SegOutput], study: Study, device: Device,
                      series_uid: str | None = None) -> hd.sr.Comprehensive3DSR | None:
    """The SR of a result, or None when the result has nothing an SR would hold."""
    builder = _Builder(study, device)
    for seg in segs:
        builder.segments(seg)
    for box in result_json.get("bounding_boxes_2d") or []:
        builder.box(box)
    for item in result_json.get("linear_measurements_2d") or []:
        builder.measurement(item)
    builder.classification("study classification", result_json.get("study_ml_json"))
    for uid, values in (result_json.get("series_ml_json") or {}).items():
        members = [i for i in study.instances if i.series_instance_uid == uid]
        builder.classification(f"series classification {uid}", values, members)
    if not builder.groups:
        return None

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
    evidence = [source_dataset(i) for i in builder.referenced.values()] + [s.dataset for s in segs]
    if not evidence:  # only study-level classification: the study's first image names patient and study
        evidence = [source_dataset(study.instances[0])]
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER,
        series_description=f"{device.name} report"[:64],
        sop_instance_uid=generate_uid(),
        instance_number=1,
        is_complete=True,
        coding_schemes=codes.CODING_SCHEMES,
        **device.equipment(),
    )
