"""A DICOM Segmentation drawn like the Arterys masks: each segment on the source frames it derives from.

Why through highdicom: it maps SEG frames to source instances and frames (the Derivation Image references)
and unpacks BINARY bits, as a viewer would; the tool only decides which source frames a SEG covers. Those
are every single-frame image its Referenced Series Sequence lists (frames left out because they were empty
are empty, not missing) and every frame of a multi-frame image that one of its frames derives from. BINARY
segments are drawn like boolean masks, FRACTIONAL ones like probability masks (threshold 0.5 of the
Maximum Fractional Value), in the segment's recommended display colour (else one colour per label).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom

from testtool.dicom_output_info import DicomOutputs, Segment, SegmentationInfo
from testtool.findings import BooleanMask, ProbabilityMask
from testtool.study import InputImage


def read_segmentation(part: int, dataset: pydicom.Dataset, by_sop: dict[str, InputImage], out: DicomOutputs) -> None:
    name = f"part {part} (SEG)"
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
        segments = [_segment(seg, number, out) for number in seg.segment_numbers]
        planes = list(_planes(seg, dataset, by_sop, name, out.notes))
    except Exception as exc:  # noqa: BLE001 - a broken SEG is a note, whatever highdicom raises
        out.notes.append(f"{name}: cannot be read as a Segmentation ({exc}); not drawn")
        return
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    maximum = int(dataset.get("MaximumFractionalValue", 255) or 255)
    for image, frame, pixels in planes:
        for index, segment in enumerate(segments):
            plane = np.asarray(pixels[..., index])
            if fractional:  # probability = stored / maximum, drawn from 0.5 as a probability mask is
                scaled = np.round(plane.astype(np.float64) * 255 / maximum).clip(0, 255).astype(np.uint8)
                finding = ProbabilityMask(scaled, segment.label, 0.5, segment.color)
            else:
                finding = BooleanMask(plane.astype(np.uint8), segment.label, segment.color)
            out.findings[(image.sop_instance_uid, frame)].append(finding)
    kind = f"FRACTIONAL ({dataset.get('SegmentationFractionalType', '')})" if fractional else "BINARY"
    series = dataset.ReferencedSeriesSequence[0].SeriesInstanceUID if "ReferencedSeriesSequence" in dataset else ""
    out.segmentations.append(SegmentationInfo(part, str(dataset.SOPInstanceUID), kind, segments, str(series),
                                              len(planes)))


def _segment(seg: hd.seg.Segmentation, number: int, out: DicomOutputs) -> Segment:
    """A segment drawn in its Recommended Display CIELab Value when the SEG gives one (as a viewer does; the
    worker writes arterys_http.label_colours' colour there), else in the tool's colour for its label."""
    description = seg.get_segment_description(number)
    label = str(description.segment_label)
    colour = out.color(label)
    if "RecommendedDisplayCIELabValue" in description:
        colour = hd.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue).to_rgb()
        out.colors.setdefault(label, colour)
    return Segment(number, label, str(description.segmented_property_type.meaning), colour)


def _planes(seg, dataset, by_sop: dict[str, InputImage], name: str, notes: list[str]):
    """(image, 0-based frame, pixels (rows, columns, segments)) for every source frame the SEG covers."""
    sources = [uid for _study, _series, uid in seg.get_source_image_uids()]
    images = []
    for uid in sources:
        image = by_sop.get(uid)
        if image is None:
            notes.append(f"{name}: source image {uid} is not an input image; not drawn there")
        elif (image.rows, image.cols) != (dataset.Rows, dataset.Columns):
            notes.append(f"{name}: {dataset.Rows}x{dataset.Columns} (rows x columns), but source image {uid} has "
                         f"{image.rows}x{image.cols}; not drawn there")
        else:
            images.append(image)
    single = [image for image in images if image.frames == 1]
    if single:
        pixels = seg.get_pixels_by_source_instance([image.sop_instance_uid for image in single], combine_segments=False,
                                                   rescale_fractional=False, assert_missing_frames_are_empty=True)
        for image, planes in zip(single, pixels, strict=True):
            yield image, 0, planes
    referenced = _referenced_frames(dataset)
    for image in images:
        frames = sorted(f for f in referenced.get(image.sop_instance_uid, ()) if 0 < f <= image.frames)
        if image.frames == 1 or not frames:
            continue
        pixels = seg.get_pixels_by_source_frame(image.sop_instance_uid, frames, combine_segments=False,
                                                rescale_fractional=False, assert_missing_frames_are_empty=True)
        for number, planes in zip(frames, pixels, strict=True):
            yield image, number - 1, planes


def _referenced_frames(dataset: pydicom.Dataset) -> dict[str, set[int]]:
    """Source frame numbers per source instance, from each SEG frame's Derivation Image Sequence."""
    frames: dict[str, set[int]] = {}
    for item in dataset.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                numbers = source.get("ReferencedFrameNumber")
                if numbers is None:
                    continue
                numbers = numbers if isinstance(numbers, (list, pydicom.multival.MultiValue)) else [numbers]
                frames.setdefault(str(source.ReferencedSOPInstanceUID), set()).update(int(n) for n in numbers)
    return frames
