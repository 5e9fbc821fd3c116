"""What a model returns, through a real worker: the legacy adapter equals the typed API byte for byte,
every kind of broken result is refused with INTERNAL and a message naming the problem, and any numpy
memory layout is written in the protocol's byte order."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pydicom
import pytest

from contract import inference_pb2 as pb
from contract.result_json import encode_result
from mock_model.legacy import legacy_model
from tests.conftest import serving
from tests.worker_client import infer
from worker import BoundingBox, DicomOutput, LegacyHandlerModel, LinearMeasurement, Mask, Model, Palette, Result

BROKEN = "the model's result breaks the Arterys protocol"


# ------------------------------------------------------------------------------------ legacy = typed


@pytest.fixture(scope="module")
def legacy_stub():
    with serving(legacy_model, model="mock_model.legacy:legacy_model") as (_, _, stub):
        yield stub


@pytest.mark.parametrize("with_attachment", [False, True], ids=["instances", "attachment-first"])
@pytest.mark.parametrize("command", ["get-bounding-box-2d", "get-probability-mask", None])
def test_legacy_handler_answers_exactly_like_the_typed_model(worker_stub, legacy_stub, standard_parts, command,
                                                             with_attachment):
    request = {} if command is None else {"inference_command": command}
    parts = list(standard_parts)
    if with_attachment:
        # The original gateway hands attachments to the handler ahead of the instances, in the same list.
        parts.insert(0, (pb.PART_KIND_ATTACHMENT, "application/pdf", b"%PDF-1.4 referral letter"))
    typed = infer(worker_stub, request, parts)
    legacy = infer(legacy_stub, request, parts)
    assert legacy.json == typed.json
    assert encode_result(legacy.json) == encode_result(typed.json)  # key order included
    assert legacy.result.SerializeToString(deterministic=True) == typed.result.SerializeToString(deterministic=True)
    assert legacy.binaries == typed.binaries
    if command == "get-probability-mask":
        assert len(typed.binaries) == 4 and all(typed.binaries)
    else:
        assert len(typed.json["bounding_boxes_2d"]) == 4


# --------------------------------------------------------------------------------- broken results


class ScriptedModel(Model):
    """Answers whatever the test put in `answer(study)`."""

    name = "scripted"

    def __init__(self) -> None:
        self.answer = lambda study: Result()

    def infer(self, study):
        return self.answer(study)


@pytest.fixture(scope="module")
def scripted():
    model = ScriptedModel()
    with serving(model) as (server, _, stub):
        yield model, stub, server


def axial(study):
    """The standard study's axial CT: 6 slices of 32 rows x 48 columns."""
    return next(s for s in study.series if (s.rows, s.columns, s.frame_count) == (32, 48, 6))


def multiframe(study):
    return next(s for s in study.series if s.instances[0].frames == 5)


def volume_part(study, **changes) -> dict:
    series = axial(study)
    part = {"label": "lesion", "binary_type": "probability_mask",
            "binary_data_shape": {"timepoints": 1, "depth": 6, "width": 48, "height": 32},
            "SeriesInstanceUID": series.uid}
    part.update(changes)
    return part


def zeros(*shape, dtype=np.uint8):
    return np.zeros(shape, dtype=dtype)


def labels(values):
    array = zeros(6, 32, 48)
    for index, value in enumerate(values):
        array[index, 0, 0] = value
    return array


def axial_mask(study, array, binary_type="probability_mask", **kwargs) -> Mask:
    return Mask("lesion", array, binary_type, series_instance_uid=axial(study).uid, **kwargs)


def heatmap_with(palette: Palette | None, name: str = "p"):
    def answer(study):
        palettes = None if palette is None else {name: palette}
        return Result(parts=[axial_mask(study, zeros(6, 32, 48), "heatmap", palette="p")], palettes=palettes)
    return answer


def first_axial_instance(study):
    return axial(study).instances[0]


BROKEN_CASES = {
    # A shape in the author's terms: the array's axes, the expected ones, and the call that fixes it.
    "3D mask built as (rows, cols, depth)": (
        lambda s: Result(parts=[axial_mask(s, zeros(32, 48, 6))]),
        ["width x height is 6 x 48 but the series' images are 48 x 32",
         "the mask array is (32, 48, 6) but the series it names ", "needs (depth, rows, cols) = (6, 32, 48) "
         "(series.mask_shape() gives (timepoints, depth, rows, cols)); it looks like (rows, cols, depth): "
         "np.moveaxis(mask, -1, 0) makes it (depth, rows, cols)"],
    ),
    "2D mask built as (cols, rows)": (
        lambda s: Result(parts=[Mask("lesion", zeros(48, 32), "probability_mask",
                                     sop_instance_uid=axial(s).instances[0].sop_instance_uid)]),
        ["the mask array is (48, 32) but the image it names ",
         "needs (rows, cols) = (32, 48) (instance.rows, instance.columns); "
         "it looks like (cols, rows): mask.T makes it (rows, cols)"],
    ),
    "fewer binaries than parts": (
        lambda s: ({"protocol_version": "1.0", "parts": [volume_part(s), volume_part(s)]}, [zeros(6, 32, 48)]),
        ["2 entries declared but 1 binaries returned", "exactly one binary per entry of parts"],
    ),
    "more binaries than parts": (
        lambda s: ({"protocol_version": "1.0", "parts": [volume_part(s)]}, [zeros(6, 32, 48), zeros(6, 32, 48)]),
        ["1 entries declared but 2 binaries returned"],
    ),
    "mask length != shape": (
        lambda s: ({"protocol_version": "1.0", "parts": [volume_part(s)]}, [zeros(5, 32, 48)]),
        ["needs 9216 bytes", "the binary has 7680"],
    ),
    "legacy shape with width and height swapped": (
        lambda s: ({"protocol_version": "1.0", "parts": [volume_part(
            s, binary_data_shape={"timepoints": 1, "depth": 6, "width": 32, "height": 48})]}, [zeros(6, 48, 32)]),
        ["width x height is 32 x 48 but the series' images are 48 x 32"],
    ),
    "legacy shape with width and depth swapped": (
        lambda s: ({"protocol_version": "1.0", "parts": [volume_part(
            s, binary_data_shape={"timepoints": 1, "depth": 48, "width": 6, "height": 32})]}, [zeros(6, 32, 48)]),
        ["width x height is 6 x 32", "depth x timepoints is 48 x 1 but the series has 6 images"],
    ),
    "float64 mask": (
        lambda s: Result(parts=[axial_mask(s, np.zeros((6, 32, 48)))]),
        ["mask dtype must be uint8, got float64", ".astype(np.uint8)"],
    ),
    "bool probability mask": (
        lambda s: Result(parts=[axial_mask(s, zeros(6, 32, 48, dtype=bool))]),
        ["mask dtype must be uint8, got bool"],
    ),
    "mask that is a list": (
        lambda s: Result(parts=[axial_mask(s, [[0, 1], [1, 0]])]),
        ["a mask must be a numpy array, got list"],
    ),
    "1-D mask": (
        lambda s: Result(parts=[axial_mask(s, zeros(6 * 32 * 48))]),
        ["a mask array must be 2D", "got shape (9216,)"],
    ),
    "unknown binary_type": (
        lambda s: Result(parts=[axial_mask(s, zeros(6, 32, 48), "segmentation")]),
        ["binary_type: unknown value 'segmentation'", "numeric_label_mask"],
    ),
    "legacy unknown binary_type": (
        lambda s: ({"protocol_version": "1.0", "parts": [volume_part(s, binary_type="mask")]}, [zeros(6, 32, 48)]),
        ["unknown value 'mask'"],
    ),
    "label values missing from label_map": (
        lambda s: Result(parts=[axial_mask(s, labels([1, 2, 3, 7]), "numeric_label_mask",
                                           label_map={1: "core", 2: "rim"})]),
        ["mask values [3, 7] have no entry in label_map"],
    ),
    "label_map with non-digit keys": (
        lambda s: Result(parts=[axial_mask(s, labels([1]), "numeric_label_mask",
                                           label_map={"1": "core", "one": "rim"})]),
        ["key 'one' must be a digit string"],
    ),
    "label_map with duplicate names": (
        lambda s: Result(parts=[axial_mask(s, labels([1, 2]), "numeric_label_mask",
                                           label_map={1: "lesion", 2: "lesion"})]),
        ["label names must be unique; repeated: ['lesion']"],
    ),
    "label mask without label_map": (
        lambda s: Result(parts=[axial_mask(s, labels([1]), "numeric_label_mask")]),
        ["a numeric_label_mask needs a label_map"],
    ),
    "heatmap naming a missing palette": (
        heatmap_with(None),
        ["palette: 'p' names no entry of the top-level palettes object"],
    ),
    "palette with one point": (
        heatmap_with(Palette([(0.0, (0, 0, 0, 0))])),
        ["palettes['p'].data: needs at least two anchor points"],
    ),
    "palette whose first threshold is not 0": (
        heatmap_with(Palette([(0.2, (0, 0, 0, 0)), (1.0, (255, 0, 0, 255))])),
        ["the first threshold must be 0.0 and the last 1.0"],
    ),
    "palette colour out of range": (
        heatmap_with(Palette([(0.0, (0, 0, 0, 0)), (1.0, (256, 0, 0, 255))])),
        ["palettes['p'].data[1].color: must be four integers 0..255", "256"],
    ),
    "2D mask for an unknown SOPInstanceUID": (
        lambda s: Result(parts=[Mask("x", zeros(32, 48), sop_instance_uid="1.2.3.999")]),
        ["dicom_image.SOPInstanceUID: names no instance of the input study"],
    ),
    "2D mask of the wrong size": (
        lambda s: Result(parts=[Mask("x", zeros(48, 32), sop_instance_uid=first_axial_instance(s).sop_instance_uid)]),
        ["width x height is 32 x 48 but the image is 48 x 32"],
    ),
    "2D mask on a frame the instance does not have": (
        lambda s: Result(parts=[Mask("x", zeros(16, 20), sop_instance_uid=multiframe(s).instances[0].sop_instance_uid,
                                     frame_number=6)]),
        ["frame_number 6 but the instance has 5 frame(s)"],
    ),
    "3D mask whose depth is not the series' frames": (
        lambda s: Result(parts=[axial_mask(s, zeros(5, 32, 48))]),
        ["depth x timepoints is 5 x 1 but the series has 6 images"],
    ),
    "3D mask counting instances instead of frames": (
        lambda s: Result(parts=[Mask("x", zeros(1, 16, 20), series_instance_uid=multiframe(s).uid)]),
        ["depth x timepoints is 1 x 1 but the series has 5 images"],
    ),
    "3D mask of an unknown series": (
        lambda s: Result(parts=[Mask("x", zeros(6, 32, 48), series_instance_uid="1.2.3.4.5")]),
        ["parts[0].SeriesInstanceUID: names no series of the input study"],
    ),
    "bounding box outside the image": (
        lambda s: Result(bounding_boxes=[BoundingBox("x", first_axial_instance(s).sop_instance_uid, [10, 5],
                                                     [53, 20])]),
        ["bounding_boxes_2d[0]", "point [53, 20] lies outside the 48 x 32 image"],
    ),
    "bounding box upside down": (
        lambda s: Result(bounding_boxes=[BoundingBox("x", first_axial_instance(s).sop_instance_uid, [10, 20], [5, 5])]),
        ["must be above and left of bottom_right"],
    ),
    "measurement with an unknown coordinates type": (
        lambda s: Result(linear_measurements=[LinearMeasurement("x", first_axial_instance(s).sop_instance_uid,
                                                                [1, 1], [2, 2], "mm")]),
        ["coordinates_type: must be \"pixel\" or \"world\", got 'mm'"],
    ),
    "DICOM output that is not DICOM": (
        lambda s: Result(parts=[DicomOutput("report", b"%PDF-1.7 not a DICOM file" * 10, "dicom")]),
        ["parts[0]: a dicom binary must be a DICOM Part 10 file"],
    ),
    "pydicom Dataset that cannot be written": (
        lambda s: Result(parts=[DicomOutput("capture", pydicom.Dataset())]),
        ["parts[0]: the pydicom Dataset cannot be written as a DICOM file"],
    ),
    "numpy scalar in study_ml_json": (
        lambda s: Result(study_ml_json={"count": np.int64(3)}),
        ["cannot be sent as JSON", "int64", "int()/float()"],
    ),
    "NaN in study_ml_json": (
        lambda s: Result(study_ml_json={"score": float("nan")}),
        ["cannot be sent as JSON", "NaN"],
    ),
    "neither Result nor pair": (
        lambda s: {"protocol_version": "1.0", "parts": []},
        ["infer() must return a Result or a (json, buffers) pair, got dict"],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_CASES))
def test_broken_results_are_internal_with_the_problem_named(scripted, standard_parts, case):
    model, stub, _server = scripted
    model.answer, needles = BROKEN_CASES[case]
    with pytest.raises(grpc.RpcError) as caught:
        infer(stub, {}, standard_parts)
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL, error.details()
    assert error.details().startswith(BROKEN), error.details()
    for needle in needles:
        assert needle in error.details()


def test_after_broken_results_the_worker_still_answers(scripted, standard_parts):
    model, stub, server = scripted
    model.answer = BROKEN_CASES["float64 mask"][0]
    with pytest.raises(grpc.RpcError):
        infer(stub, {}, standard_parts)
    model.answer = lambda s: Result(parts=[axial_mask(s, zeros(6, 32, 48))])
    answer = infer(stub, {}, standard_parts)
    assert answer.binaries == [bytes(6 * 32 * 48)]
    labels_ = {"model": "scripted", "command": "none", "outcome": "invalid_result"}
    assert server.metrics.registry.get_sample_value("worker_inferences_total", labels_) >= 1


# ----------------------------------------------------------------------------------- memory layouts


def test_any_memory_layout_is_sent_in_c_order_of_the_logical_shape(scripted, standard_parts):
    model, stub, _server = scripted
    rng = np.random.default_rng(5)
    arrays: list[tuple[str, np.ndarray, str]] = []

    def answer(study):
        series = axial(study)
        image = series.instances[0]
        transposed = rng.integers(0, 256, (48, 32, 6), dtype=np.uint8).transpose(2, 1, 0)
        fortran = np.asfortranarray(rng.integers(0, 256, (6, 32, 48), dtype=np.uint8))
        reversed_slices = rng.integers(0, 256, (6, 32, 48), dtype=np.uint8)[::-1]
        strided = rng.integers(0, 256, (12, 64, 96), dtype=np.uint8)[::2, ::2, ::2]
        four_d = rng.integers(0, 256, (48, 32, 6, 1), dtype=np.uint8).transpose(3, 2, 1, 0)
        flipped_columns = rng.integers(0, 256, (6, 32, 48), dtype=np.uint8)[:, :, ::-1]
        labels_t = np.asfortranarray(rng.integers(0, 3, (6, 32, 48), dtype=np.uint8))
        bool_mask = rng.random((48, 32, 6)) > 0.5
        bool_t = bool_mask.transpose(2, 1, 0)
        two_d = rng.integers(0, 256, (48, 32), dtype=np.uint8).T
        arrays[:] = [("probability_mask", a, "3d") for a in
                     (transposed, fortran, reversed_slices, strided, four_d, flipped_columns)]
        arrays.extend([("numeric_label_mask", labels_t, "3d"), ("boolean_mask", bool_t, "3d"),
                       ("boolean_mask", np.ascontiguousarray(bool_t), "3d"), ("probability_mask", two_d, "2d")])
        assert not any(a.flags.c_contiguous for a in (transposed, fortran, reversed_slices, strided, four_d,
                                                      flipped_columns, labels_t, bool_t, two_d))
        parts = []
        for binary_type, array, kind in arrays:
            extra = {"label_map": {1: "core", 2: "rim"}} if binary_type == "numeric_label_mask" else {}
            if kind == "3d":
                parts.append(Mask("m", array, binary_type, series_instance_uid=series.uid, **extra))
            else:
                parts.append(Mask("m", array, binary_type, sop_instance_uid=image.sop_instance_uid))
        return Result(parts=parts)

    model.answer = answer
    result = infer(stub, {}, standard_parts)
    assert len(result.binaries) == len(arrays) == 10
    for (binary_type, array, kind), part, binary in zip(arrays, result.json["parts"], result.binaries, strict=True):
        expected = np.ascontiguousarray(array).astype(np.uint8).tobytes()
        assert binary == expected, (binary_type, array.strides)
        if kind == "3d":
            timepoints, depth, height, width = (1, *array.shape) if array.ndim == 3 else array.shape
            assert part["binary_data_shape"] == {"timepoints": timepoints, "depth": depth, "width": width,
                                                 "height": height}
        else:
            assert part["binary_data_shape"] == {"width": 48, "height": 32}
        assert part["binary_type"] == binary_type
    # bool masks: one byte per voxel, 1 for True.
    assert set(result.binaries[7]) == {0, 1}
    assert result.binaries[7] == result.binaries[8]
    assert json.loads(encode_result(result.json))["parts"][6]["label_map"] == {"1": "core", "2": "rim"}


# ------------------------------------------------------------------- a legacy mask in the wrong layout


def test_a_legacy_mask_in_another_axis_order_goes_out_as_the_original_sent_it_with_a_warning(
        scripted, standard_parts, caplog):
    """The original gateway sent `array.tostring()` whatever its shape: a handler whose binary_data_shape is
    right but whose array is (rows, cols, depth) is answered as before, its bytes in the array's order (the
    viewer draws them scrambled), and the log names the axes and the fix."""
    model, stub, _server = scripted
    array = np.arange(32 * 48 * 6, dtype=np.uint32).astype(np.uint8).reshape(32, 48, 6)

    def answer(study):
        def handler(json_input, dicom_instances, input_hash):
            return {"protocol_version": "1.0", "parts": [volume_part(study)]}, [array]

        return LegacyHandlerModel(handler).infer(study)

    model.answer = answer
    with caplog.at_level("WARNING", logger="worker.legacy"):
        answer = infer(stub, {}, standard_parts)
    assert answer.binaries == [array.tobytes()]
    (warning,) = [r.getMessage() for r in caplog.records if "mask array" in r.getMessage()]
    assert warning == ("parts[0] ('lesion'): the handler's mask array is (32, 48, 6) but its binary_data_shape says "
                       "(depth, rows, cols) = (6, 32, 48): its bytes are sent in the array's own order, as the "
                       "original gateway sent them, and the viewer will draw them scrambled; it looks like "
                       "(rows, cols, depth): np.moveaxis(mask, -1, 0) makes it (depth, rows, cols)")
