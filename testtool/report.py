"""The text a model author reads at the end of a run: what was drawn where, what came back, what is wrong.

Why a table per series and per part: the classic mistake (width and depth swapped, a mask on the wrong
series) shows up as a series with no masks drawn next to a part whose shape does not match it, which is
quicker to see side by side than in the JSON.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from testtool.answer import ReceivedAnswer
from testtool.dicom_output_info import DicomOutputs
from testtool.findings import MASK_FINDINGS, Box, FindingMap, Measurement, TextLines
from testtool.study import LoadedStudy


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def series_rows(study: LoadedStudy, findings: FindingMap) -> list[list[object]]:
    series_of = {image.sop_instance_uid: image.series_instance_uid for image in study.images}
    counts: dict[str, Counter] = {uid: Counter() for uid in study.series}
    for (sop_uid, _frame), items in findings.items():
        counter = counts.get(series_of.get(sop_uid, ""))
        if counter is None:
            continue
        for item in items:
            if isinstance(item, Box):
                counter["boxes"] += 1
            elif isinstance(item, Measurement):
                counter["measurements"] += 1
            elif isinstance(item, MASK_FINDINGS):
                counter["masks"] += 1
        if any(isinstance(item, TextLines) for item in items):
            counter["labels"] += 1  # images showing classification text
    rows = []
    for number, (uid, images) in enumerate(study.series.items(), start=1):
        description = str(images[0].dataset.get("SeriesDescription", "") or "-")
        frames = sum(image.frames for image in images if image.has_pixels)
        rows.append([number, description, uid, len(images), frames, counts[uid]["boxes"],
                     counts[uid]["masks"], counts[uid]["measurements"], counts[uid]["labels"]])
    return rows


def series_notes(study: LoadedStudy, result, findings: FindingMap) -> dict[str, str]:
    """SeriesInstanceUID -> a note, for each series on which nothing is drawn: the model did not annotate it,
    or the answer names it and what it holds could not be drawn (the drawing notes say why)."""
    drawn = {uid for uid, *counts in ((row[2], *row[5:8]) for row in series_rows(study, findings)) if any(counts)}
    named = _series_named(study, result)
    return {uid: ("the answer names this series, but nothing of it could be drawn: see the drawing notes"
                  if uid in named else "the model did not annotate this series: nothing in its answer names it")
            for uid in study.series if uid not in drawn}


def _series_named(study: LoadedStudy, result) -> set[str]:
    if not isinstance(result, dict):
        return set()
    series_of = {image.sop_instance_uid: image.series_instance_uid for image in study.images}
    named = set(result.get("series_ml_json") or {}) if isinstance(result.get("series_ml_json"), dict) else set()
    for key in ("parts", "bounding_boxes_2d", "linear_measurements_2d"):
        items = result.get(key)
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            image = item.get("dicom_image") if isinstance(item.get("dicom_image"), dict) else item
            named.add(str(item.get("SeriesInstanceUID") or series_of.get(image.get("SOPInstanceUID"), "")))
    return named


def shape_text(entry) -> str:
    shape = entry.get("binary_data_shape") if isinstance(entry, dict) else None
    if not isinstance(shape, dict):
        return "-"
    keys = [k for k in ("timepoints", "depth", "height", "width") if k in shape]
    return "x".join(str(shape[k]) for k in keys) + f" ({','.join(k[0] for k in keys)})"


def part_rows(result, answer: ReceivedAnswer, out_dir: Path) -> list[list[object]]:
    declared = result.get("parts") if isinstance(result, dict) else None
    declared = declared if isinstance(declared, list) else []
    binaries = answer.binary_parts
    rows = []
    for index in range(max(len(declared), len(binaries))):
        entry = declared[index] if index < len(declared) else None
        binary = binaries[index] if index < len(binaries) else None
        label = str(entry.get("label", "")) if isinstance(entry, dict) else "(no entry in parts)"
        binary_type = str(entry.get("binary_type", "")) if isinstance(entry, dict) else "-"
        if binary is None:
            size, written = "(missing)", "-"
        else:
            size, written = binary.size, _relative(binary.path, out_dir) if binary.path else "-"
        rows.append([index + 1, label or "-", binary_type, shape_text(entry), size, written])
    return rows


def _relative(path: Path, out_dir: Path) -> str:
    try:
        return str(Path(path).relative_to(out_dir))
    except ValueError:
        return str(path)


def summary(
    study: LoadedStudy,
    result,
    answer: ReceivedAnswer,
    findings: FindingMap,
    violations: Sequence[str],
    notes: Sequence[str],
    out_dir: Path,
    pngs: Sequence[Path],
    sheets: int = 0,
    report: Path | None = None,
    dicom: DicomOutputs | None = None,
) -> str:
    sections = []
    if study.series:
        headers = ["#", "description", "SeriesInstanceUID", "instances", "images", "boxes", "masks", "measurements",
                   "labels"]
        rows = series_rows(study, findings)
        notes_by_series = series_notes(study, result, findings)
        sections.append("Series (findings drawn on the PNGs)\n" + table(headers, rows) + "".join(
            f"\n  series {row[0]}: {notes_by_series[row[2]]}" for row in rows if row[2] in notes_by_series))
    rows = part_rows(result, answer, out_dir)
    sections.append("Binary parts\n" + (table(["#", "label", "binary_type", "shape", "bytes", "file"], rows)
                                        if rows else "(none)"))
    if dicom is not None and (dicom.segmentations or dicom.reports):
        sections.append(dicom_text(dicom))
    if notes:
        sections.append("Drawing notes\n" + "\n".join(f"- {note}" for note in notes))
    if violations:
        sections.append(f"{len(violations)} protocol violation(s)\n"
                        + "\n".join(f"- {problem}" for problem in violations))
    else:
        sections.append("0 protocol violations: the answer follows docs/protocol.md")
    masks = sum(1 for part in answer.binary_parts if part.path and part.path.suffix == ".npy")
    dicoms = sum(1 for part in answer.binary_parts if part.path and part.path.suffix == ".dcm")
    fixed = [name for name in ("response.json", "hashes.txt") if (Path(out_dir) / name).exists()]
    sections.append(
        f"Files in {out_dir}: {', '.join(fixed) or 'no response.json'}, {masks} mask file(s) output_masks_N.npy "
        f"(raw uint8, no .npy header), {dicoms} DICOM file(s) sc_N.dcm, {len(pngs)} PNG(s), "
        f"{sheets} contact sheet(s)"
    )
    if report is not None:
        sections.append(f"Report: {report} (open it in a browser)")
    return "\n\n".join(sections)


def dicom_text(dicom: DicomOutputs) -> str:
    """The DICOM outputs as read back: each SEG's segments, each report's measurement groups."""
    lines = ["DICOM outputs (read back with highdicom; SEGs drawn like masks, report regions in orange)"]
    if dicom.segmentations:
        rows = [[s.part, s.kind, ", ".join(f"{x.number} {x.label}" for x in s.segments), s.planes, s.source_series]
                for s in dicom.segmentations]
        lines.append(table(["part", "Segmentation", "segments", "frames drawn", "source series"], rows))
    for report in dicom.reports:
        lines.append(f"part {report.part}: {report.title} (TID 1500), {len(report.groups)} measurement group(s)")
        for number, group in enumerate(report.groups, start=1):
            facts = [group.template, *([f"finding {group.finding}"] if group.finding else []), *group.measurements,
                     *group.evaluations, *(region.text for region in group.regions)]
            lines.append(f"  {number}. {group.tracking_identifier or '(no tracking identifier)'}: " + "; ".join(facts))
    return "\n".join(lines)
