"""`python -m testtool`: send a study to an Arterys-protocol inference service, check the answer, draw it.

Why this tool exists: the original Arterys test tool drew whatever came back, so a mask with width and
depth swapped looked fine there and wrong in the viewer. This one loads the study the way it sends it
(testtool.study), streams the request (testtool.send), reads the answer as it streams in
(testtool.answer), checks it against docs/protocol.md (testtool.check), maps the findings onto the images
(testtool.findings), draws them (testtool.render), prints a summary (testtool.report) and writes an HTML
report beside the PNGs (testtool.html_report). The flags are the original tool's, so existing scripts
keep working. docs/testtool.md is the user's guide.

Exit codes: 0 the answer follows the protocol; 1 it violates it (each violation is printed); 2 no usable
answer: HTTP error status (the server's message is printed), connection failure, or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests
from tqdm import tqdm

from arterys_http.protocol import sha256_hex
from arterys_http.request import CHUNK_SIZE
from testtool.answer import DICOM_FILE, MASK_FILE, ReceivedAnswer, read_answer
from testtool.check import check_answer, study_index
from testtool.dicom_outputs import merge_findings, read_dicom_outputs
from testtool.findings import findings_for_study
from testtool.html_report import REPORT_FILE, ReportInput, write_report
from testtool.loading import load_study
from testtool.render import PLAIN_DIR, SHEET_FILE, write_pictures
from testtool.report import summary
from testtool.sample_study import write_sample_study
from testtool.send import (
    DEFAULT_COMMANDS,
    MultipartBody,
    StudyChanged,
    build_request_json,
    name_parts,
    request_parts,
    sent_files,
    study_path_body,
)
from testtool.study import LoadedStudy

EXIT_OK, EXIT_VIOLATIONS, EXIT_FAILURE = 0, 1, 2
CONNECT_TIMEOUT = 10.0
LARGE_ANSWER = 4 << 20  # below this a download bar would only flicker
ERROR_BODY_LIMIT = 1 << 20
# Files of an earlier run that this run would otherwise leave mixed with its own.
OWN_FILES = ("response.json", "hashes.txt", MASK_FILE.format("*"), DICOM_FILE.format("*"), "series*_slice*_frame*.png",
             SHEET_FILE.format("*"), REPORT_FILE, f"{PLAIN_DIR}/series*_slice*_frame*.png")

DESCRIPTION = """\
Send a DICOM study to an Arterys-protocol inference service (e.g. the bridge), check the answer
against the protocol and draw every finding on PNG copies of the input images.

The request is multipart/related, as the Arterys app sends it: the request JSON first, then the
attachments (-a), then every DICOM instance of STUDY_DIR (series by series, slices along the slice
normal). PNG/JPEG files in STUDY_DIR are converted to DICOM secondary captures; other files are
reported and skipped."""

EPILOG = """\
files written to OUTPUT (created if needed; files with these names left by an earlier run are removed first):
  response.json         the result JSON, pretty-printed (as received if it is not valid JSON)
  output_masks_N.npy    the Nth mask binary, N from 1: RAW uint8 bytes WITHOUT a .npy header, exactly
                        as the original tool wrote them (ndarray.tofile). Read one back with
                        numpy.fromfile(path, dtype=numpy.uint8).reshape(timepoints, depth, height, width)
                        or .reshape(height, width) for a 2D mask
  sc_N.dcm              the Nth DICOM output (secondary capture, SEG, structured report, GSPS), N from 1
  hashes.txt            the answer's last part, <input_hash>:<output_hash>
  seriesSS_sliceNNNN_frameFF.png
                        one picture per input image frame with every finding drawn (legend and
                        classification text in a panel below the image)
  seriesSS_sheet.png    contact sheet: every frame of series SS, frames with findings outlined
  index.html            the report: summary, contact sheets, findings, protocol checks, request and
                        answer JSON; open it in a browser (works offline, from file://)

exit status:
  0  the answer follows the protocol (docs/protocol.md)
  1  the answer violates the protocol: every violation is printed
  2  no usable answer: HTTP error status (the server's message is printed), connection failure,
     or invalid arguments

example:
  python -m testtool -i ./study -c get-probability-mask --host 127.0.0.1 -p 8900 -o output"""



def _program_name() -> str:
    """As the user typed it: `arterys-testtool` (the installed console script) or `python -m testtool`."""
    invoked = os.path.basename(sys.argv[0] if sys.argv else "")
    return invoked if invoked == "arterys-testtool" else "python -m testtool"

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(), description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-i", "--input", type=Path, metavar="STUDY_DIR",
                        help="folder of the study to send (searched recursively); required unless "
                             "--make-sample-study is given")
    parser.add_argument("--make-sample-study", "--make_sample_study", type=Path, metavar="DIR",
                        help="write a small CT series of a body-shaped phantom (24 slices of 128 x 128, no patient "
                             "data) into DIR and stop: a study to try the tool and a model with")
    parser.add_argument("--host", default="127.0.0.1", help="host of the inference service (default: %(default)s)")
    parser.add_argument("-p", "--port", type=int, default=8900, help="its port (default: %(default)s)")
    parser.add_argument("-r", "--route", default="/",
                        help="HTTP path the request is posted to, e.g. /segment (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path, default=Path("output"),
                        help="folder for the answer's files and the PNGs (default: %(default)s)")
    parser.add_argument("-c", "--inference_command", "--inference-command", metavar="COMMAND",
                        help="inference_command of the request JSON, e.g. get-bounding-box-2d, "
                             "get-probability-mask; without it (and without -s/-b/-cl) the request names none "
                             "and the model's default applies")
    parser.add_argument("-a", "--attachments", nargs="+", action="extend", default=[], type=Path, metavar="FILE",
                        help="one or more files sent as application/octet-stream parts before the instances "
                             "(e.g. a licence file)")
    parser.add_argument("-S", "--send_study_size", "--send-study-size", action="store_true",
                        help="add depth (number of instances sent), height and width (rows and columns of the "
                             "first image) to the request JSON, as the original tool did")
    parser.add_argument("--request_options", "--request-options", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE",
                        help="extra request JSON entries, values sent as strings; they are added last, so they "
                             "can override any other key")
    parser.add_argument("--request_study_path", "--request-study-path", metavar="PATH",
                        help="send the application/json form {\"studyPath\": PATH, ...} instead of the files: PATH "
                             "is a folder the server's model can read. STUDY_DIR is still loaded here, to check "
                             "and draw the answer, so it should hold the same study")
    parser.add_argument("--output-formats", "--output_formats", type=_formats, metavar="FORMATS",
                        help="output_formats of the request JSON, comma-separated: arterys (the protocol's masks), "
                             "dicom (DICOM Segmentations and a TID 1500 report, drawn and listed like the rest); "
                             "without it the request names none and the server's default applies")
    parser.add_argument("--outline", action="store_true",
                        help="draw masks as outlines (one pixel of the label's colour around each region) instead "
                             "of filled, so that the tissue under them stays visible")
    parser.add_argument("-l", "--include_label_plots", "--include-label-plots", action="store_true",
                        help="also write study_ml_json / series_ml_json (classification labels) on the PNGs")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="how long to wait for the server to accept the connection (at most 10 s) and for each "
                             "piece of its answer; 0 waits forever (default: %(default)s)")
    parser.add_argument("--token", default=os.environ.get("TESTTOOL_TOKEN") or None,
                        help="bearer token sent as 'Authorization: Bearer TOKEN', for a bridge that requires one "
                             "(default: $TESTTOOL_TOKEN; prefer it, a flag shows in the process list)")
    parser.add_argument("--https", action="store_true", help="talk HTTPS to the service")
    parser.add_argument("--cacert", type=Path, metavar="FILE",
                        help="CA certificate (PEM) the service's HTTPS certificate is checked against, for a "
                             "private CA; implies --https")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (they are also off when the output is not a terminal)")
    legacy = parser.add_argument_group(
        "model type (original tool's flags, kept for old scripts)",
        "They only choose the inference command when -c is not given.")
    kinds = legacy.add_mutually_exclusive_group()
    kinds.add_argument("-s", "--segmentation_model", "--segmentation-model", dest="model_type", action="store_const",
                       const="segmentation",
                       help=f"segmentation model: inference command {DEFAULT_COMMANDS['segmentation']}")
    kinds.add_argument("-b", "--bounding_box_model", "--bounding-box-model", dest="model_type", action="store_const",
                       const="bounding_box",
                       help=f"bounding box model: inference command {DEFAULT_COMMANDS['bounding_box']}")
    kinds.add_argument("-cl", "--classification_model", "--classification-model", dest="model_type",
                       action="store_const",
                       const="classification",
                       help=f"classification model: inference command {DEFAULT_COMMANDS['classification']}")
    return parser


def _formats(text: str) -> list[str]:
    """Sent as given (the server names the formats it knows when it refuses one)."""
    formats = [item.strip() for item in text.split(",") if item.strip()]
    if not formats:
        raise argparse.ArgumentTypeError("name at least one format, e.g. arterys,dicom")
    return formats


def parse_options(parser: argparse.ArgumentParser, values: list[str]) -> dict[str, str]:
    options = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            parser.error(f"--request_options takes KEY=VALUE pairs, got {value!r}")
        options[key] = text
    return options


def url_of(host: str, port: int, route: str, scheme: str = "http") -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{host}:{port}{route if route.startswith('/') else '/' + route}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = parse_options(parser, args.request_options)
    if args.make_sample_study is not None:
        return _make_sample_study(args.make_sample_study)
    if args.input is None:
        parser.error("the following arguments are required: -i/--input (or --make-sample-study DIR)")
    if not args.input.is_dir():
        parser.error(f"STUDY_DIR {args.input} is not a folder")
    for path in args.attachments:
        if not path.is_file():
            parser.error(f"attachment {path} is not a file")
    bars = not args.quiet and sys.stdout.isatty() and sys.stderr.isatty()

    study = load_study(args.input)
    for path, reason in study.skipped:
        print(f"skipped {path}: {reason}")
    if not study.images:
        print(f"warning: {args.input} holds no DICOM instance or PNG/JPEG picture")

    command = args.inference_command or DEFAULT_COMMANDS.get(args.model_type or "")
    request_json = build_request_json(command, study, args.send_study_size, options, args.output_formats)
    url = url_of(args.host, args.port, args.route, "https" if args.https or args.cacert else "http")
    timeout = (min(CONNECT_TIMEOUT, args.timeout), args.timeout) if args.timeout > 0 else None
    request_id = f"testtool-{uuid.uuid4().hex[:12]}"  # both services log it: printed with any error answer
    try:
        response, input_hash = _post(url, args, study, request_json, timeout, bars, request_id)
    except requests.Timeout:
        print(f"error: no answer from {url} within {args.timeout:g} s (--timeout)", file=sys.stderr)
        return EXIT_FAILURE
    except (UploadBroken, StudyChanged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except requests.ConnectionError as exc:
        print(f"error: cannot reach {url}: {_reason(exc)}\nIs the bridge running and listening on "
              f"{args.host}:{args.port}? (arterys-bridge --worker HOST:PORT --listen HOST:PORT; in a checkout: "
              ".venv/bin/python -m bridge ...)", file=sys.stderr)
        return EXIT_FAILURE
    with response:
        if response.status_code != 200:
            files = [] if args.request_study_path else sent_files(args.attachments, study.images)
            message = _http_error(url, response, request_id, files)
            print(message, file=sys.stderr)
            _remove_own_files(args.output)
            report = _error_report(args, study, url, request_json, input_hash, message.removeprefix("error: "))
            print(f"Report: {report} (open it in a browser)", file=sys.stderr)
            return EXIT_FAILURE
        _remove_own_files(args.output)
        answer, broken = _receive(response, args.output, bars)
    return _finish(args, study, answer, input_hash, broken, url, request_json)


def _make_sample_study(folder: Path) -> int:
    sample = write_sample_study(folder)
    print(f"wrote a sample CT study into {sample.folder}: {len(sample.files)} slices of a phantom "
          f"({sample.folder / 'CT'}), no patient data.\nSend it: {_program_name()} -i {folder} "
          "-c get-probability-mask -o output")
    return EXIT_OK


def _connection(args, request_id: str) -> dict:
    """requests' keyword arguments for the token, the request id and the HTTPS certificate check."""
    headers = {"X-Request-Id": request_id, **({"Authorization": f"Bearer {args.token}"} if args.token else {})}
    return {"headers": headers, "verify": str(args.cacert) if args.cacert else True}


def _post(url, args, study: LoadedStudy, request_json: dict, timeout, bars: bool, request_id: str):
    """(streamed response, SHA-256 of the parts sent)."""
    connection = _connection(args, request_id)
    if args.request_study_path:
        body = study_path_body(args.request_study_path, request_json)
        print(f"Sending studyPath {args.request_study_path!r} to {url} with {json.dumps(request_json)}")
        response = requests.post(url, data=body, headers={**connection["headers"], "Content-Type": "application/json"},
                                 verify=connection["verify"], timeout=timeout, stream=True)
        return response, sha256_hex([body])
    parts = request_parts(request_json, args.attachments, study.images)
    size = sum(part.size for part in parts[1 + len(args.attachments):])
    print(f"Sending {len(study.images)} instance(s) ({size / 2**20:.1f} MiB) and {len(args.attachments)} "
          f"attachment(s) to {url} with {json.dumps(request_json)}", flush=True)
    body = MultipartBody(parts)
    with tqdm(total=len(body), unit="B", unit_scale=True, unit_divisor=1024, desc="upload", disable=not bars,
              leave=False) as bar:
        sent = 0

        def count(size: int) -> None:
            nonlocal sent
            sent += size
            bar.update(size)

        body.on_bytes = count
        try:
            headers = {**connection["headers"], "Content-Type": body.content_type}
            response = requests.post(url, data=body, headers=headers, verify=connection["verify"], timeout=timeout,
                                     stream=True)
        except requests.ConnectionError as exc:
            if not sent or isinstance(exc, requests.Timeout):
                raise  # never connected, or no answer in time: main() explains those
            raise UploadBroken(
                f"the connection to {url} broke after {sent} of {len(body)} bytes were sent: {_reason(exc)} "
                "(the server may have refused the request without reading it; its logs say why)"
            ) from exc
    return response, body.input_hash


class UploadBroken(RuntimeError):
    """The server closed the connection in the middle of the request, without an HTTP answer."""


def _reason(exc: BaseException) -> str:
    """The innermost cause, without urllib3's object reprs."""
    for _ in range(10):  # cause chains are short; never loop forever on a cycle
        inner = exc.__cause__ or next((a for a in exc.args if isinstance(a, BaseException)), None)
        if inner is None:
            break
        exc = inner
    text = str(exc)
    return text.split(": ", 1)[-1] if text.startswith("<") else text


def _error_report(args, study: LoadedStudy, url: str, request_json: dict, input_hash: str, error: str) -> Path:
    """The report of an error answer: the error, the request, the study's images with nothing drawn."""
    pictures = write_pictures(study, {}, args.output)
    return write_report(ReportInput(args.output, url, request_json, input_hash, study, None, ReceivedAnswer(""), {},
                                    [], [], pictures, EXIT_FAILURE, error))


def _http_error(url: str, response: requests.Response, sent_id: str = "", files: Sequence[Path] = ()) -> str:
    """The error answer in one line: its message (each "part N" with the file it came from), its code, and the
    request id both services' log lines carry."""
    raw = b""
    for chunk in response.iter_content(64 * 1024):
        raw += chunk
        if len(raw) >= ERROR_BODY_LIMIT:
            break
    text = raw.decode("utf-8", errors="replace")
    message = text.strip()[:2000] or "(empty body)"
    request_id = response.headers.get("X-Request-Id", "")
    try:
        error = json.loads(text).get("error", {})
        if error.get("message"):
            message = f"{name_parts(str(error['message']), files)} ({error.get('code')})"
        request_id = str(error.get("request_id") or request_id)
    except (ValueError, AttributeError):
        pass
    request_id = request_id or sent_id
    where = (f"; request id {request_id}: the bridge's and the worker's log lines about it carry "
             f"request_id={request_id}") if request_id else ""
    return (f"error: {url} answered HTTP {response.status_code} {response.reason or ''}".rstrip()
            + f": {message}{where}")


def _remove_own_files(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for pattern in OWN_FILES:
        for path in out_dir.glob(pattern):
            if path.is_file():
                path.unlink()


def _receive(response: requests.Response, out_dir: Path, bars: bool) -> tuple[ReceivedAnswer, str | None]:
    """The answer, streamed to disk; and why the connection broke, if it did."""
    length = response.headers.get("Content-Length", "")
    total = int(length) if length.isdigit() else None
    broken: list[str] = []
    show = bars and (total is None or total >= LARGE_ANSWER)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="download", disable=not show,
              leave=False) as bar:
        def chunks() -> Iterator[bytes]:
            try:
                for chunk in response.iter_content(CHUNK_SIZE):
                    bar.update(len(chunk))
                    yield chunk
            except requests.RequestException as exc:
                broken.append(f"the connection broke while reading the answer: {_reason(exc)}")

        answer = read_answer(response.headers.get("Content-Type", ""), chunks(), out_dir)
    return answer, (broken[0] if broken else None)


def _finish(args, study: LoadedStudy, answer: ReceivedAnswer, input_hash: str, broken: str | None, url: str,
            request_json: dict) -> int:
    out_dir: Path = args.output
    result, json_error = answer.result_json()
    if answer.parts:
        text = (json.dumps(result, indent=2, ensure_ascii=False) + "\n").encode("utf-8") if json_error is None \
            else answer.json_bytes
        (out_dir / "response.json").write_bytes(text)
    if answer.hashes_text is not None:
        (out_dir / "hashes.txt").write_text(answer.hashes_text, encoding="utf-8")

    violations = check_answer(answer, input_hash, study_index(study))
    if isinstance(result, dict):
        binaries = [part.data for part in answer.binary_parts]
        findings, notes = findings_for_study(study, result, binaries, draw_labels=args.include_label_plots)
        dicom = read_dicom_outputs(study, result, binaries)  # SEGs drawn like masks, the report's regions
        findings, notes = merge_findings(findings, dicom.findings), notes + dicom.notes
    else:
        findings, notes, dicom = {}, [], None
    pictures = write_pictures(study, findings, out_dir, outline=args.outline)
    pngs = [picture.path for series in pictures for picture in series.frames]
    status = EXIT_FAILURE if broken else EXIT_VIOLATIONS if violations else EXIT_OK
    report = write_report(ReportInput(out_dir, url, request_json, input_hash, study, result, answer, findings,
                                      violations, notes, pictures, status, broken, dicom=dicom))
    print()
    print(summary(study, result, answer, findings, violations, notes, out_dir, pngs,
                  sheets=sum(series.sheet is not None for series in pictures), report=report, dicom=dicom))
    if broken:
        print(f"error: {broken}", file=sys.stderr)
    return status
