"""Every MockModel command through a real worker, checked against an independent recomputation.

The expected masks are recomputed here from the shape's definition (an off-centre ellipse growing with
the slice index) rather than imported from mock_model, and the expected order of slices and images
comes from the DICOM factory's own record of positions (`StudyRecord.sorted_series`), not from the
worker's Series ordering.
"""

from __future__ import annotations

import hashlib
import io
import json

import grpc
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from arterys_http.protocol import ImageInfo, StudyIndex, check_result
from contract import inference_pb2 as pb
from tests.conftest import serving
from tests.dicom_factory import SeriesSpec, make_dataset
from tests.worker_client import collect, dicom_parts, infer, request_messages
from worker import Model, Result

# Spelled out, not imported from MockModel: these names are a contract users and scripts rely on.
MOCK_COMMANDS = [
    "get-bounding-box-2d",
    "get-probability-mask",
    "get-probability-mask-2d",
    "get-boolean-mask",
    "get-heatmap",
    "get-label-mask",
    "get-classification",
    "get-linear-measurements",
    "get-secondary-capture",
    "get-structured-report",
]
SECONDARY_CAPTURE_CLASS = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"
ALL_COMPLIANT = [
    {"description": "Series has at least 3 images", "compliant": True},
    {"description": "Slices are evenly spaced", "compliant": True},
    {"description": "Pixel spacing is present", "compliant": True},
]


# ------------------------------------------------------------------------- independent recomputation


def _grow(index: int, count: int) -> float:
    return 0.15 + 0.25 * (index + 1) / max(count, 1)


def distance_at(y: int, x: int, height: int, width: int, index: int, count: int) -> float:
    """Normalised squared distance of pixel (y, x) from the ellipse centre (40 % across, 60 % down)."""
    grow = _grow(index, count)
    cy, cx = height * 0.6, width * 0.4
    ry, rx = max(height * grow, 1.0), max(width * grow, 1.0)
    dy = (y + 0.5 - cy) / ry
    dx = (x + 0.5 - cx) / rx
    return dy * dy + dx * dx


def value_at(kind: str, y: int, x: int, height: int, width: int, index: int, count: int) -> int:
    d = distance_at(y, x, height, width, index, count)
    if kind in ("probability_mask", "heatmap"):
        return min(max(round((1.0 - d) * 255.0), 0), 255)
    if kind == "boolean_mask":
        return 1 if d <= 1.0 else 0
    if kind == "numeric_label_mask":
        return 1 if d <= 0.4 else 2 if d <= 1.0 else 0
    raise ValueError(kind)


def expected_slice(kind: str, height: int, width: int, index: int, count: int) -> np.ndarray:
    """The same definition as value_at, for a whole (height, width) slice at once."""
    grow = _grow(index, count)
    cy, cx = height * 0.6, width * 0.4
    ry, rx = max(height * grow, 1.0), max(width * grow, 1.0)
    y = np.arange(height, dtype=np.float64)[:, None]
    x = np.arange(width, dtype=np.float64)[None, :]
    dy = (y + 0.5 - cy) / ry
    dx = (x + 0.5 - cx) / rx
    d = dy * dy + dx * dx
    if kind in ("probability_mask", "heatmap"):
        return np.clip(np.rint((1.0 - d) * 255.0), 0, 255).astype(np.uint8)
    if kind == "boolean_mask":
        return (d <= 1.0).astype(np.uint8)
    if kind == "numeric_label_mask":
        return np.where(d <= 0.4, 1, np.where(d <= 1.0, 2, 0)).astype(np.uint8)
    raise ValueError(kind)


def expected_volume(kind: str, depth: int, height: int, width: int) -> bytes:
    return b"".join(expected_slice(kind, height, width, z, depth).tobytes() for z in range(depth))


def series_in_order(study, sent) -> list[tuple[str, list]]:
    """(SeriesInstanceUID, instances by position along the normal) in order of first appearance."""
    uids = list(dict.fromkeys(i.series_instance_uid for i in sent))
    return [(uid, study.sorted_series(uid)) for uid in uids]


def frames_of(instances) -> list[tuple]:
    """(instance, frame_number or None) for every image of a series, in slice order."""
    return [(i, (f + 1) if i.frames > 1 else None) for i in instances for f in range(i.frames)]


def study_index(study) -> StudyIndex:
    return StudyIndex.of(
        ImageInfo(i.sop_instance_uid, i.series_instance_uid, i.rows, i.cols, i.frames) for i in study.instances
    )


def run(stub, parts, command: str | None, **request):
    if command is not None:
        request["inference_command"] = command
    return infer(stub, request, parts)


def rpc_error(stub, messages) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub.Infer(iter(list(messages)), timeout=30))
    return caught.value


# ------------------------------------------------------------------------------------ 3D masks


MASK_COMMANDS = {
    "get-probability-mask": "probability_mask",
    "get-boolean-mask": "boolean_mask",
    "get-heatmap": "heatmap",
    "get-label-mask": "numeric_label_mask",
}


@pytest.mark.parametrize("command", list(MASK_COMMANDS))
def test_3d_masks_match_independent_recomputation(worker_stub, standard_study, standard_sent, standard_parts,
                                                   command):
    kind = MASK_COMMANDS[command]
    answer = run(worker_stub, standard_parts, command)
    expected_series = series_in_order(standard_study, standard_sent)

    assert check_result(answer.json, answer.binaries, study_index(standard_study)) == []
    parts = answer.json["parts"]
    assert len(parts) == len(answer.binaries) == len(expected_series) == 4
    for part, proto_part, binary, (uid, instances) in zip(parts, answer.result.parts, answer.binaries,
                                                          expected_series, strict=True):
        rows, cols = instances[0].rows, instances[0].cols
        depth = sum(i.frames for i in instances)  # the multi-frame instance counts all its frames
        assert part["binary_type"] == kind
        assert part["SeriesInstanceUID"] == uid
        assert part["binary_data_shape"] == {"timepoints": 1, "depth": depth, "width": cols, "height": rows}
        assert len(binary) == 1 * depth * rows * cols == proto_part.binary_size
        assert binary == expected_volume(kind, depth, rows, cols)
        # Layout: column fastest, then row, then slice.
        for z, y, x in [(0, 0, 0), (depth - 1, rows - 1, cols - 1), (depth // 2, int(rows * 0.6), int(cols * 0.4)),
                        (1, rows // 3, cols - 2), (depth - 1, rows // 2, 1)]:
            assert binary[z * rows * cols + y * cols + x] == value_at(kind, y, x, rows, cols, z, depth), (z, y, x)
        assert part["dicomConformance"] == {"recommended": ALL_COMPLIANT}

        if kind == "probability_mask":
            assert part["probability_threshold"] == 0.5
        if kind == "heatmap":
            assert part["palette"] in answer.json["palettes"]
        if kind == "numeric_label_mask":
            assert part["label_map"] == {"1": "core", "2": "rim"}
            values = set(binary)
            assert {1, 2} <= values
            assert values - {0} <= {int(k) for k in part["label_map"]}

    if kind == "heatmap":
        assert answer.json["palettes"] == {
            "mock_heatmap": {"type": "anchorpoints", "data": [
                {"threshold": 0.0, "color": [0, 0, 255, 0]},
                {"threshold": 0.5, "color": [0, 255, 0, 128]},
                {"threshold": 1.0, "color": [255, 0, 0, 255]},
            ]},
        }


def test_conformance_reports_what_is_wrong_with_the_input(worker_stub, standard_study):
    series = standard_study.sorted_series(standard_study.series[0].series_uid)  # 6 evenly spaced axial slices
    uneven = [series[0], series[1], series[3]]
    answer = run(worker_stub, dicom_parts([i.path for i in uneven]), "get-boolean-mask")
    assert [c["compliant"] for c in answer.json["parts"][0]["dicomConformance"]["recommended"]] == [True, False, True]
    assert answer.json["parts"][0]["binary_data_shape"]["depth"] == 3

    two = series[:2]
    answer = run(worker_stub, dicom_parts([i.path for i in two]), "get-probability-mask")
    assert [c["compliant"] for c in answer.json["parts"][0]["dicomConformance"]["recommended"]] == [False, True, True]


# ------------------------------------------------------------------------------------ 2D masks


def test_2d_masks_one_part_per_image_and_frame(worker_stub, standard_study, standard_sent, standard_parts):
    answer = run(worker_stub, standard_parts, "get-probability-mask-2d")
    assert check_result(answer.json, answer.binaries, study_index(standard_study)) == []

    expected = []
    for _uid, instances in series_in_order(standard_study, standard_sent):
        images = frames_of(instances)
        expected += [(instance, frame, index, len(images)) for index, (instance, frame) in enumerate(images)]
    assert len(expected) == 6 + 4 + 5 + 3
    assert len(answer.json["parts"]) == len(answer.binaries) == len(expected)

    for part, binary, (instance, frame, index, count) in zip(answer.json["parts"], answer.binaries, expected,
                                                             strict=True):
        image = {"SOPInstanceUID": instance.sop_instance_uid}
        if frame is not None:
            image["frame_number"] = frame
        assert part["dicom_image"] == image
        assert part["binary_data_shape"] == {"width": instance.cols, "height": instance.rows}
        assert part["binary_type"] == "probability_mask"
        assert len(binary) == instance.rows * instance.cols
        assert binary == expected_slice("probability_mask", instance.rows, instance.cols, index, count).tobytes()
        y, x = instance.rows // 2, instance.cols // 3
        assert binary[y * instance.cols + x] == value_at("probability_mask", y, x, instance.rows, instance.cols,
                                                         index, count)
        assert part["dicomConformance"] == {"recommended": ALL_COMPLIANT}
    frames = [p["dicom_image"].get("frame_number") for p in answer.json["parts"]]
    assert [f for f in frames if f is not None] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------- annotations


def middle(instances):
    images = frames_of(instances)
    return images[len(images) // 2]


@pytest.mark.parametrize("command", ["get-bounding-box-2d", None, ""])
def test_bounding_boxes_on_the_middle_image_of_each_series(worker_stub, standard_study, standard_sent,
                                                           standard_parts, command):
    answer = run(worker_stub, standard_parts, command)  # None / "": the default command is bounding boxes
    assert answer.json["parts"] == [] and answer.binaries == []
    assert set(answer.json) == {"protocol_version", "parts", "bounding_boxes_2d"}
    assert answer.json["protocol_version"] == "1.0"
    boxes = answer.json["bounding_boxes_2d"]
    expected_series = series_in_order(standard_study, standard_sent)
    assert len(boxes) == len(expected_series)
    for box, (_uid, instances) in zip(boxes, expected_series, strict=True):
        instance, frame = middle(instances)
        rows, cols = instance.rows, instance.cols
        expected = {"label": "mock finding", "SOPInstanceUID": instance.sop_instance_uid,
                    "top_left": [cols // 5, rows // 3], "bottom_right": [(cols * 3) // 5, (rows * 9) // 10 - 1]}
        if frame is not None:
            expected["frame_number"] = frame
        assert box == expected
        assert all(isinstance(v, int) for v in box["top_left"] + box["bottom_right"])
        # The box holds the ellipse's centre.
        assert box["top_left"][0] <= cols * 0.4 <= box["bottom_right"][0]
        assert box["top_left"][1] <= rows * 0.6 <= box["bottom_right"][1]
    assert check_result(answer.json, [], study_index(standard_study)) == []


def test_linear_measurements(worker_stub, standard_study, standard_sent, standard_parts):
    answer = run(worker_stub, standard_parts, "get-linear-measurements")
    items = answer.json["linear_measurements_2d"]
    expected = []
    for _uid, instances in series_in_order(standard_study, standard_sent):
        instance, frame = middle(instances)
        rows, cols = instance.rows, instance.cols
        frame_key = {"frame_number": frame} if frame is not None else {}
        expected.append({"label": "mock width", "SOPInstanceUID": instance.sop_instance_uid, **frame_key,
                         "coordinates_type": "pixel", "start": [cols // 5, rows // 2],
                         "end": [(cols * 3) // 5, rows // 2]})
        x, y = instance.position[0], instance.position[1]
        expected.append({"label": "mock world", "SOPInstanceUID": instance.sop_instance_uid, **frame_key,
                         "coordinates_type": "world", "start": [round(x, 3), round(y, 3)],
                         "end": [round(x + 10.5, 3), round(y, 3)]})
    assert items == expected
    assert [list(i) for i in items] == [list(e) for e in expected]  # key order too
    assert check_result(answer.json, [], study_index(standard_study)) == []


def test_classification_keeps_integers(worker_stub, standard_study, standard_sent, standard_parts):
    answer = run(worker_stub, standard_parts, "get-classification")
    study_json = answer.json["study_ml_json"]
    assert study_json == {"label": "normal", "probability": 0.87, "series_count": 4, "instance_count": 14,
                          "findings": [{"name": "mock nodule", "count": 2}], "command": "get-classification"}
    assert list(study_json) == ["label", "probability", "series_count", "instance_count", "findings", "command"]
    for key in ("series_count", "instance_count"):
        assert type(study_json[key]) is int
    assert type(study_json["findings"][0]["count"]) is int
    # On the wire too: JSON text in which the integers are integers.
    assert '"series_count": 4,' in answer.result.study_ml_json
    assert '"instance_count": 14,' in answer.result.study_ml_json

    expected_series = series_in_order(standard_study, standard_sent)
    series_json = answer.json["series_ml_json"]
    assert list(series_json) == [uid for uid, _ in expected_series]
    for i, (uid, instances) in enumerate(expected_series):
        assert series_json[uid] == {"label": "normal" if i % 2 else "abnormal", "score": 0.75 if i % 2 else 0.25,
                                    "slices": sum(x.frames for x in instances)}
        assert type(series_json[uid]["slices"]) is int
    assert answer.binaries == []


# -------------------------------------------------------------------------------- DICOM outputs


def test_secondary_capture_is_real_dicom_of_the_input_study(worker_stub, standard_study, standard_sent,
                                                            standard_parts):
    answer = run(worker_stub, standard_parts, "get-secondary-capture")
    expected_series = series_in_order(standard_study, standard_sent)
    assert len(answer.json["parts"]) == len(answer.binaries) == len(expected_series)
    sop_uids = set()
    for part, binary, (_uid, instances) in zip(answer.json["parts"], answer.binaries, expected_series,
                                                strict=True):
        assert part == {"label": "mock secondary capture", "binary_type": "dicom_secondary_capture"}
        assert binary[128:132] == b"DICM"
        ds = pydicom.dcmread(io.BytesIO(binary))
        instance, _frame = middle(instances)
        count = sum(i.frames for i in instances)
        assert ds.SOPClassUID == SECONDARY_CAPTURE_CLASS
        assert ds.file_meta.MediaStorageSOPClassUID == SECONDARY_CAPTURE_CLASS
        assert ds.StudyInstanceUID == standard_study.study_instance_uid
        assert ds.PatientID == "TEST-0001"
        assert (ds.Rows, ds.Columns) == (instance.rows, instance.cols)
        assert ds.PixelData == expected_slice("probability_mask", instance.rows, instance.cols, count // 2,
                                              count).tobytes()
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == len(expected_series)
    assert not sop_uids & {i.sop_instance_uid for i in standard_study.instances}


def test_structured_report(worker_stub, standard_study, standard_sent, standard_parts):
    answer = run(worker_stub, standard_parts, "get-structured-report")
    assert answer.json["parts"] == [{"label": "mock report", "binary_type": "dicom"}]
    assert "binary_data_shape" not in answer.json["parts"][0]
    ds = pydicom.dcmread(io.BytesIO(answer.binaries[0]))
    assert ds.SOPClassUID == BASIC_TEXT_SR_CLASS
    assert ds.Modality == "SR"
    assert ds.StudyInstanceUID == standard_study.study_instance_uid
    texts = [item.TextValue for item in ds.ContentSequence]
    assert texts == [
        f"Series {uid}: {sum(i.frames for i in instances)} image(s) reviewed, mock finding present"
        for uid, instances in series_in_order(standard_study, standard_sent)
    ]
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == standard_study.study_instance_uid
    referenced = {ref.ReferencedSOPInstanceUID for s in evidence.ReferencedSeriesSequence
                  for ref in s.ReferencedSOPSequence}
    assert referenced == {i.sop_instance_uid for i in standard_study.instances}


# ------------------------------------------------------------------------------ commands, Describe


def test_describe(worker_stub):
    description = worker_stub.Describe(pb.DescribeRequest(), timeout=10)
    assert description.name == "mock_model"
    assert description.version == "1.0"
    assert list(description.commands) == MOCK_COMMANDS
    assert description.default_command == "get-bounding-box-2d"


def test_unknown_command_lists_the_valid_ones(worker_stub, standard_parts):
    error = rpc_error(worker_stub, request_messages({"inference_command": "get-everything"}, standard_parts[:1]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "get-everything" in error.details()
    for command in MOCK_COMMANDS:
        assert command in error.details()


def test_configured_default_command_overrides_the_models(standard_study, standard_parts):
    from mock_model import MockModel

    with serving(MockModel(), default_command="get-classification") as (_, _, stub):
        assert stub.Describe(pb.DescribeRequest(), timeout=10).default_command == "get-classification"
        answer = run(stub, standard_parts, None)
        assert answer.json["study_ml_json"]["command"] == "get-classification"
        assert "bounding_boxes_2d" not in answer.json
        # An explicit command still wins.
        assert "bounding_boxes_2d" in run(stub, standard_parts, "get-bounding-box-2d").json


# ------------------------------------------------------------------------- what reaches the model


class RecordingModel(Model):
    """Records what the worker hands to the model (the study's files are gone after the call)."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def infer(self, study):
        self.seen.append({
            "request": study.request,
            "command": study.command,
            "input_hash": study.input_hash,
            "route": study.route,
            "attachments": [(a.index, a.content_type, a.filename, a.name, a.read_bytes()) for a in study.attachments],
            "instances": [(i.index, i.sop_instance_uid, i.filename, i.content_type, i.read_bytes())
                          for i in study.instances],
        })
        return Result()


@pytest.fixture(scope="module")
def recording_worker():
    model = RecordingModel()
    with serving(model) as (_, _, stub):
        yield model, stub


def messages(request_json: bytes, parts, command: str = "", input_hash: str | None = None, route: str = ""):
    """parts: (kind, content_type, filename, name, data), each sent in chunks of 1000 bytes."""
    yield pb.InferRequest(header=pb.RequestHeader(request_json=request_json, inference_command=command,
                                                  request_id="r1", route=route))
    digest = hashlib.sha256(request_json)
    for kind, content_type, filename, name, data in parts:
        yield pb.InferRequest(part=pb.PartHeader(kind=kind, content_type=content_type, filename=filename, name=name))
        for start in range(0, len(data), 1000):
            yield pb.InferRequest(chunk=data[start : start + 1000])
        digest.update(data)
    yield pb.InferRequest(end=pb.RequestEnd(input_hash=digest.hexdigest() if input_hash is None else input_hash,
                                            part_count=len(parts)))


def test_attachments_and_instances_reach_the_model_in_request_order(recording_worker, standard_sent):
    model, stub = recording_worker
    request_json = b'{"inference_command": "anything", "studyUID": "1.2.3", "depth": 6, "my_option": "x", "n": 1}'
    licence = b"LICENCE-KEY-123\n" * 100
    config = b'{"threshold": 0.3}'
    dicoms = standard_sent[:5]
    parts = [(pb.PART_KIND_ATTACHMENT, "application/octet-stream", "licence.bin", "licence", licence),
             (pb.PART_KIND_ATTACHMENT, "application/json", "", "config", config)]
    parts += [(pb.PART_KIND_DICOM, "application/dicom", f"img{n}.dcm", "", i.path.read_bytes())
              for n, i in enumerate(dicoms)]
    answer = collect(stub.Infer(messages(request_json, parts, command="anything", route="/seg"), timeout=30))
    assert answer.json == {"protocol_version": "1.0", "parts": []}

    seen = model.seen[-1]
    assert seen["request"] == json.loads(request_json)
    assert list(seen["request"]) == ["inference_command", "studyUID", "depth", "my_option", "n"]
    assert seen["command"] == "anything"
    assert seen["route"] == "/seg"
    expected_hash = hashlib.sha256(request_json + b"".join(p[4] for p in parts)).hexdigest()
    assert seen["input_hash"] == expected_hash
    assert seen["attachments"] == [(0, "application/octet-stream", "licence.bin", "licence", licence),
                                   (1, "application/json", "", "config", config)]
    assert [(i[0], i[1], i[2], i[3]) for i in seen["instances"]] == [
        (n + 2, r.sop_instance_uid, f"img{n}.dcm", "application/dicom") for n, r in enumerate(dicoms)
    ]
    assert [i[4] for i in seen["instances"]] == [r.path.read_bytes() for r in dicoms]


def test_no_json_part_stands_for_an_empty_object(recording_worker, standard_sent):
    model, stub = recording_worker
    parts = [(pb.PART_KIND_DICOM, "application/dicom", "a.dcm", "", standard_sent[0].path.read_bytes())]
    collect(stub.Infer(messages(b"", parts), timeout=30))
    assert model.seen[-1]["request"] == {}
    assert model.seen[-1]["route"] == "/"


# ---------------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("filename", ["broken.dcm", ""])
def test_a_part_that_is_not_dicom_is_named_by_its_number(worker_stub, standard_sent, filename):
    """By its number only: a file name often holds a patient's name, and the message reaches the logs."""
    good = [(pb.PART_KIND_DICOM, "application/dicom", f"{n}.dcm", "", i.path.read_bytes())
            for n, i in enumerate(standard_sent[:2])]
    bad = (pb.PART_KIND_DICOM, "application/dicom", filename, "", b"this is a PNG, honestly" * 20)
    error = rpc_error(worker_stub, messages(b"{}", [*good, bad]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("part 3 is sent as application/dicom but is not a readable DICOM file")


def test_wrong_input_hash_is_data_loss(worker_stub, standard_parts):
    error = rpc_error(worker_stub, request_messages({}, standard_parts[:2], input_hash="0" * 64))
    assert error.code() == grpc.StatusCode.DATA_LOSS
    assert "0" * 64 in error.details()


def _dicom_messages(parts):
    return list(request_messages({}, parts))[1:]  # without the header


@pytest.mark.parametrize("case, expected", [
    ("no header", "must start with a header"),
    ("empty stream", "must start with a header"),
    ("no end", "without an end message"),
    ("chunk before part", "chunk arrived before any part header"),
    ("part count", "counts 7 parts but 1 arrived"),
    ("bad json", "not valid JSON"),
    ("json array", "must be a JSON object, got an array"),
    ("no instance", "no DICOM instance"),
])
def test_malformed_streams_are_invalid_argument(worker_stub, standard_parts, case, expected):
    header = pb.InferRequest(header=pb.RequestHeader(request_json=b"{}"))
    body = _dicom_messages(standard_parts[:1])  # part, chunk(s), end
    one_dicom = [(pb.PART_KIND_DICOM, "application/dicom", "a.dcm", "", standard_parts[0][2])]
    stream = {
        "no header": lambda: body,
        "empty stream": lambda: [],
        "no end": lambda: [header, *body[:-1]],
        "chunk before part": lambda: [header, *body[1:]],
        "part count": lambda: [header, *body[:-1], pb.InferRequest(end=pb.RequestEnd(part_count=7))],
        "bad json": lambda: messages(b"{not json", one_dicom),
        "json array": lambda: messages(b"[1, 2]", one_dicom),
        "no instance": lambda: request_messages({}, []),
    }[case]()
    error = rpc_error(worker_stub, stream)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert expected in error.details()


def test_worker_still_serves_after_bad_requests(worker_stub, standard_parts):
    rpc_error(worker_stub, [])
    assert run(worker_stub, standard_parts[:1], "get-bounding-box-2d").json["bounding_boxes_2d"]


# ------------------------------------------------------------------------- pixels of every encoding


class PixelDigestModel(Model):
    """Decodes every instance's pixels in the worker, as a real model does, and reports their digests."""

    name = "pixel_digest"

    def infer(self, study):
        digests = {}
        for instance in study.instances:
            pixels = instance.dataset().pixel_array
            digests[instance.sop_instance_uid] = {
                "sha256": hashlib.sha256(np.ascontiguousarray(pixels, dtype="<u2").tobytes()).hexdigest(),
                "shape": list(pixels.shape),
                "transfer_syntax": str(instance.header.file_meta.TransferSyntaxUID),
            }
        return Result(study_ml_json=digests)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless],
                         ids=lambda uid: uid.name)
@pytest.mark.parametrize("frames", [1, 3])
def test_the_model_decodes_the_pixels_of_every_transfer_syntax(tmp_path, syntax, frames):
    # The expected pixels come from the uncompressed dataset, before it is encoded for sending.
    def dataset(transfer_syntax):
        spec = SeriesSpec("pixels", rows=40, cols=36, count=1, frames=frames, transfer_syntax=transfer_syntax)
        return make_dataset(study_uid="1.2.3.4", spec=spec, number=1, position=(0.0, 0.0, 0.0), pixel_seed=5)

    raw = dataset(ExplicitVRLittleEndian).pixel_array
    path = tmp_path / "encoded.dcm"
    dataset(syntax).save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax

    with serving(PixelDigestModel()) as (_, _, stub):
        answer = infer(stub, {}, dicom_parts([path]))
    (digest,) = answer.json["study_ml_json"].values()
    assert digest["transfer_syntax"] == syntax
    assert digest["shape"] == list(raw.shape)
    assert digest["sha256"] == hashlib.sha256(np.ascontiguousarray(raw, dtype="<u2").tobytes()).hexdigest()
