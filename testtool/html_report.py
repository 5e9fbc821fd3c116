"""`index.html`: one page beside the PNGs with everything a run found, readable from file:// offline.

Why a page: the terminal summary scrolls away and the PNGs say nothing about the answer's JSON. The page
holds the summary tables, one contact sheet per series, the findings with links to the PNG each one is
drawn on, the drawing notes, the protocol checks, and the request and answer JSON. Relative links only,
no script, no network, no framework: it opens from a copied folder or a CI artifact as it is.
`render_html` is pure (data in, text out); `write_report` is the only file write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path

from testtool.answer import ReceivedAnswer
from testtool.dicom_output_info import DicomOutputs
from testtool.render import SeriesPictures
from testtool.report import part_rows, series_notes, series_rows
from testtool.study import LoadedStudy

REPORT_FILE = "index.html"
OPEN_PAIRS = 24  # more frames with findings than this: their side-by-side pictures start folded
JSON_SHOWN = 1 << 20  # longer JSON is cut on the page; response.json holds all of it
CHECKS = (
    "the response is multipart/related with a boundary; part 1 is the result JSON (application/json)",
    "one binary part per entry of 'parts', in the same order, with the Content-Type of its binary_type",
    "every mask is uint8 and its length is timepoints x depth x height x width of its binary_data_shape",
    "width, height and depth match the images (columns, rows, frames of the series or image named)",
    "binary types, label maps (digit keys, unique names, every mask value named), palettes, thresholds",
    "every SOPInstanceUID / SeriesInstanceUID names an input instance or series; frame numbers exist",
    "boxes and pixel measurements lie inside their image",
    "the last part is '<input_hash>:<output_hash>'; both hashes recomputed from the bytes sent and received",
)
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 16px 48px;
       color: #1d1d1f; background: #fafafa; }
h1 { font-size: 22px; margin: 20px 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px;
     border-bottom: 1px solid #ccc; } h3 { font-size: 15px; margin: 20px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { border: 1px solid #d0d0d0;
        padding: 3px 8px; text-align: left; vertical-align: top; } th { background: #eee; }
code, pre { font: 12px/1.4 ui-monospace, monospace; }
code.uid { word-break: break-all; }
pre { background: #fff; border: 1px solid #d0d0d0; padding: 8px; overflow: auto; max-height: 480px; }
.verdict { padding: 8px 12px; border-radius: 4px; font-weight: 600; margin: 8px 0; }
.ok { background: #d9f2dd; } .bad { background: #fbdcdc; } .failed { background: #ffe7c2; }
.sheet { max-width: 100%; border: 1px solid #888; background: #181818; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #000;
          vertical-align: middle; margin-right: 4px; }
.legend span.item { margin-right: 14px; white-space: nowrap; } .muted { color: #666; }
nav a { margin-right: 12px; }
.note { background: #eef3fb; border-left: 4px solid #5b8bd9; padding: 6px 10px; }
figure.pair { display: inline-block; margin: 6px 12px 6px 0; vertical-align: top; }
figure.pair img { vertical-align: top; margin-right: 4px; border: 1px solid #888; max-width: 45vw; }
figure.pair figcaption { font-size: 12px; color: #444; }
"""


@dataclass
class ReportInput:
    """Everything one run knows, as the page shows it."""

    out_dir: Path
    url: str
    request_json: dict
    input_hash: str
    study: LoadedStudy
    result: object  # the parsed result JSON, or None
    answer: ReceivedAnswer
    findings: dict
    violations: Sequence[str]
    notes: Sequence[str]
    pictures: Sequence[SeriesPictures]
    exit_status: int
    broken: str | None = None
    dicom: DicomOutputs | None = None  # the answer's SEGs and TID 1500 reports, read back
    generated: datetime = field(default_factory=datetime.now)


def write_report(report: ReportInput) -> Path:
    path = Path(report.out_dir) / REPORT_FILE
    path.write_text(render_html(report), encoding="utf-8")
    return path


def render_html(report: ReportInput) -> str:
    sections = [
        _header(report),
        _summary(report),
        _series(report),
        _findings(report),
        _checks(report),
        _json_section(report),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>testtool report · {escape(report.url)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


# ---------------------------------------------------------------------------------------------------
# Sections


def _header(report: ReportInput) -> str:
    if report.broken:
        verdict = ("failed", f"No complete answer: {report.broken}")
    elif report.violations:
        verdict = ("bad", f"{len(report.violations)} protocol violation(s): the viewer may refuse or misdraw "
                          "this answer")
    else:
        verdict = ("ok", "0 protocol violations: the answer follows the protocol")
    command = report.request_json.get("inference_command", "(none: the model's default)")
    rows = [("server", escape(report.url)), ("inference_command", escape(str(command))),
            ("StudyInstanceUID", _uid(report.study.study_instance_uid)),
            ("input hash", f"<code>{escape(report.input_hash or '-')}</code>"),
            ("instances sent", str(len(report.study.images))), ("exit status", str(report.exit_status)),
            ("generated", escape(report.generated.strftime("%Y-%m-%d %H:%M:%S")))]
    nav = ('<nav><a href="#summary">Summary</a><a href="#series">Series</a><a href="#findings">Findings</a>'
           '<a href="#checks">Protocol checks</a><a href="#json">Request and answer</a></nav>')
    return (f"<h1>testtool report</h1>\n<div class=\"verdict {verdict[0]}\">{escape(verdict[1])}</div>\n"
            + _table(["", ""], rows, header=False) + nav)


def _summary(report: ReportInput) -> str:
    headers = ["#", "description", "SeriesInstanceUID", "instances", "images", "boxes", "masks",
               "measurements", "labels"]
    series = []
    for row in series_rows(report.study, report.findings):
        number, description, uid, *counts = row
        series.append([f'<a href="#series-{number}">{number}</a>', escape(str(description)), _uid(uid),
                       *(_num(c) for c in counts)])
    parts = []
    for number, label, binary_type, shape, size, written in part_rows(report.result, report.answer,
                                                                      report.out_dir):
        link = _link(written, written) if written != "-" else "-"
        parts.append([_num(number), escape(str(label)), escape(str(binary_type)), escape(str(shape)),
                      _num(size) if isinstance(size, int) else escape(str(size)), link])
    files = [name for name in ("response.json", "hashes.txt") if (Path(report.out_dir) / name).exists()]
    return ("<h2 id=\"summary\">Summary</h2>\n<h3>Series (findings drawn on the PNGs)</h3>\n"
            + (_table(headers, series) if series else "<p>No series.</p>")
            + "<h3>Binary parts</h3>\n"
            + (_table(["#", "label", "binary_type", "shape", "bytes", "file"], parts) if parts else "<p>None.</p>")
            + "<p>Files: " + (", ".join(_link(name, name) for name in files) or "no response.json") + "</p>")


def _series(report: ReportInput) -> str:
    out = ["<h2 id=\"series\">Series</h2>"]
    legend = list(dict.fromkeys(item for series in report.pictures for item in series.legend))
    if legend:
        out.append("<p class=\"legend\" id=\"legend\"><b>Legend</b> (each label has one colour in every series "
                   "and picture): " + _legend(legend) + "</p>")
    notes = series_notes(report.study, report.result, report.findings)
    for series in report.pictures:
        images = report.study.series.get(series.uid, [])
        description = str(images[0].dataset.get("SeriesDescription", "") or "") if images else ""
        timepoints, depth = report.study.series_shape(series.uid)
        out.append(f"<h3 id=\"series-{series.number}\">Series {series.number}"
                   + (f" · {escape(description)}" if description else "") + "</h3>")
        out.append(f"<p>SeriesInstanceUID {_uid(series.uid)}<br>{len(images)} instance(s), "
                   f"{len(series.frames)} frame(s) drawn; a 3D mask on it is {timepoints} time point(s) x "
                   f"{depth} slice(s)</p>")
        if series.uid in notes:
            out.append(f"<p class=\"note\">{escape(notes[series.uid][0].upper() + notes[series.uid][1:])}.</p>")
        if series.legend:
            out.append("<p class=\"legend\">" + _legend(series.legend) + "</p>")
        if series.sheet is not None:
            name = series.sheet.name
            out.append(f"<a href=\"{escape(name)}\"><img class=\"sheet\" src=\"{escape(name)}\" "
                       f"alt=\"contact sheet of series {series.number}\"></a>")
        for failure in series.failures:
            out.append(f"<p class=\"bad\">Not drawn: {escape(failure)}</p>")
        pairs = [picture for picture in series.frames if picture.plain is not None]
        if pairs:
            out.append(f"<details{' open' if len(pairs) <= OPEN_PAIRS else ''}><summary>{len(pairs)} frame(s) with "
                       "findings: the image as sent beside the findings drawn on it</summary>"
                       + "".join(_pair(picture, report.out_dir) for picture in pairs) + "</details>")
        rows = [[_link(picture.path.name, picture.path.name), _uid(picture.image.sop_instance_uid),
                 _num(picture.frame + 1), "yes" if picture.has_findings else ""] for picture in series.frames]
        if rows:
            out.append(f"<details><summary>{len(rows)} PNG(s), one per frame</summary>"
                       + _table(["PNG", "SOPInstanceUID", "frame", "findings drawn"], rows) + "</details>")
    if len(out) == 1:
        out.append("<p>No image to draw.</p>")
    return "\n".join(out)


def _legend(items) -> str:
    return " ".join(f"<span class=\"item\">{_swatch(color)}{escape(name)}</span>" for name, color in items)


def _pair(picture, out_dir: Path) -> str:
    plain = picture.plain.relative_to(out_dir).as_posix() if picture.plain.is_relative_to(out_dir) \
        else picture.plain.as_posix()
    overlay = picture.path.name
    caption = f"slice {picture.slice_number}" + (f", frame {picture.frame + 1}" if picture.image.frames > 1 else "")
    return (f"<figure class=\"pair\"><a href=\"{escape(plain)}\"><img src=\"{escape(plain)}\" "
            f"alt=\"{escape(caption)}, as sent\"></a><a href=\"{escape(overlay)}\"><img "
            f"src=\"{escape(overlay)}\" alt=\"{escape(caption)}, findings drawn\"></a>"
            f"<figcaption>{escape(caption)}: as sent · findings drawn</figcaption></figure>")


def _findings(report: ReportInput) -> str:
    result = report.result if isinstance(report.result, dict) else {}
    pngs = {(p.image.sop_instance_uid, p.frame): p.path.name for s in report.pictures for p in s.frames}
    out = ["<h2 id=\"findings\">Findings</h2>"]
    boxes = [[escape(str(item.get("label", ""))), *_where(item, pngs), _code(item.get("top_left")),
              _code(item.get("bottom_right"))] for item in _dicts(result.get("bounding_boxes_2d"))]
    if boxes:
        out.append("<h3>Bounding boxes</h3>" + _table(["label", "SOPInstanceUID", "frame", "PNG", "top_left",
                                                       "bottom_right"], boxes))
    lines = [[escape(str(item.get("label", ""))), escape(str(item.get("coordinates_type", "pixel"))),
              *_where(item, pngs), _code(item.get("start")), _code(item.get("end"))]
             for item in _dicts(result.get("linear_measurements_2d"))]
    if lines:
        out.append("<h3>Linear measurements</h3>" + _table(["label", "coordinates", "SOPInstanceUID", "frame",
                                                            "PNG", "start", "end"], lines))
    masks = []
    for number, part in enumerate(_dicts(result.get("parts")), start=1):
        target = part.get("SeriesInstanceUID")
        if target is None and isinstance(part.get("dicom_image"), dict):
            target = part["dicom_image"].get("SOPInstanceUID")
        extra = {k: part[k] for k in ("probability_threshold", "label_map", "palette", "dicom_output") if k in part}
        masks.append([_num(number), escape(str(part.get("label", ""))), escape(str(part.get("binary_type", ""))),
                      _code(part.get("binary_data_shape")), _uid(target) if target else "-",
                      _code(extra) if extra else ""])
    if masks:
        out.append("<h3>Parts (masks and DICOM outputs)</h3>" + _table(
            ["#", "label", "binary_type", "binary_data_shape", "series or image", "options"], masks))
    out += _dicom_outputs(report.dicom, pngs)
    for key in ("study_ml_json", "series_ml_json"):
        if result.get(key) is not None:
            out.append(f"<h3>{key}</h3><pre>{escape(_pretty(result[key]))}</pre>")
    if len(out) == 1:
        out.append("<p>The answer holds no finding.</p>")
    if report.notes:
        out.append("<h3>Drawing notes</h3><p class=\"muted\">What the tool could not draw, and why.</p><ul>"
                   + "".join(f"<li>{escape(note)}</li>" for note in report.notes) + "</ul>")
    return "\n".join(out)


def _dicom_outputs(dicom: DicomOutputs | None, pngs: dict) -> list[str]:
    """The SEGs (segments with their colours) and each report's measurement groups, regions linked to PNGs."""
    if dicom is None:
        return []
    out = []
    if dicom.segmentations:
        rows = [[_num(s.part), _uid(s.sop_instance_uid), escape(s.kind),
                 "<br>".join(f"{_swatch(x.color)}{x.number} {escape(x.label)} <span class=\"muted\">"
                             f"({escape(x.property_type)})</span>" for x in s.segments),
                 _num(s.planes), _uid(s.source_series)] for s in dicom.segmentations]
        out.append("<h3>Segmentations (DICOM SEG)</h3><p class=\"muted\">Drawn on the PNGs like masks: BINARY as "
                   "boolean masks, FRACTIONAL as probability masks (from 0.5), one colour per segment.</p>"
                   + _table(["part", "SOPInstanceUID", "type", "segments", "frames drawn", "source series"], rows))
    for report in dicom.reports:
        rows = []
        for number, group in enumerate(report.groups, start=1):
            regions = []
            for region in group.regions:
                name = pngs.get((region.sop_instance_uid, region.frame)) if region.sop_instance_uid else None
                regions.append(escape(region.text) + (f" · drawn on {_link(name, name)}" if name else ""))
            rows.append([_num(number), escape(group.template), escape(group.tracking_identifier),
                         escape(group.finding), "<br>".join(escape(m) for m in group.measurements),
                         "<br>".join(escape(e) for e in group.evaluations), "<br>".join(regions)])
        out.append(f"<h3>Structured report (TID 1500) · part {report.part}</h3><p>{escape(report.title)}, "
                   f"SOPInstanceUID {_uid(report.sop_instance_uid)}; regions on input images are drawn in orange.</p>"
                   + _table(["#", "template", "tracking identifier", "finding", "measurements",
                             "qualitative evaluations", "references and regions"], rows))
    return out


def _checks(report: ReportInput) -> str:
    if report.violations:
        verdict = (f"<p class=\"verdict bad\">{len(report.violations)} violation(s)</p><ul>"
                   + "".join(f"<li>{escape(problem)}</li>" for problem in report.violations) + "</ul>")
    else:
        verdict = "<p class=\"verdict ok\">0 violations</p>"
    return ("<h2 id=\"checks\">Protocol checks</h2>\n" + verdict
            + "<p>What was checked (docs/testtool.md explains each):</p><ul>"
            + "".join(f"<li>{escape(check)}</li>" for check in CHECKS) + "</ul>")


def _json_section(report: ReportInput) -> str:
    answer = report.answer.json_bytes.decode("utf-8", errors="replace")
    if isinstance(report.result, (dict, list)):
        answer = _pretty(report.result)
    cut = len(answer) > JSON_SHOWN
    hashes = report.answer.hashes_text
    return ("<h2 id=\"json\">Request and answer</h2>\n<h3>Request JSON</h3>"
            f"<pre>{escape(_pretty(report.request_json))}</pre>"
            "<h3>Answer JSON (part 1)</h3>"
            + (f"<p class=\"muted\">Cut at {JSON_SHOWN} characters; {_link('response.json', 'response.json')} "
               "holds it all.</p>" if cut else "")
            + f"<pre>{escape(answer[:JSON_SHOWN]) or '(no JSON part)'}</pre>"
            + (f"<h3>Hashes (last part)</h3><pre>{escape(hashes)}</pre>" if hashes is not None else ""))


# ---------------------------------------------------------------------------------------------------
# Pieces


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>\n"


def _where(item: dict, pngs: dict) -> list[str]:
    """SOPInstanceUID, frame and a link to the PNG the finding is drawn on."""
    uid = item.get("SOPInstanceUID")
    frame = item.get("frame_number") or 1
    name = pngs.get((uid, frame - 1)) if isinstance(frame, int) else None
    return [_uid(uid) if uid else "-", escape(str(frame)), _link(name, name) if name else "-"]


def _swatch(color) -> str:
    return f"<span class=\"swatch\" style=\"background: rgb{tuple(color)}\"></span>"


def _dicts(value) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _uid(uid) -> str:
    return f"<code class=\"uid\">{escape(str(uid))}</code>"


def _code(value) -> str:
    return f"<code>{escape(json.dumps(value, ensure_ascii=False))}</code>"


def _num(value) -> str:
    return escape(str(value))


def _link(href: str, text: str) -> str:
    return f"<a href=\"{escape(href)}\">{escape(text)}</a>"


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
