"""example_models.onnx_body: its ONNX graph against a numpy reference, known answers on studies the tests make
(in several transfer syntaxes), per-study failures inside one batch, and batches through a real worker.

The studies of tests/dicom_factory.py are a gradient of -1024..-625 HU (air) with a centred disc 900 HU
brighter (-124..275 HU, soft tissue): the body is the disc.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pydicom
import pytest
from pydicom.pixels import apply_rescale
from pydicom.uid import JPEG2000Lossless, RLELossless

from example_models.onnx_body import RUN_IMAGES, OnnxBodyModel
from example_models.onnx_body.graph import BODY_HU, HU_PER_LOGIT, build_graph, open_session
from tests.conftest import serving
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import start_worker
from tests.test_dicom_export_studies import as_study
from tests.worker_client import dicom_parts, infer, stub_for
from worker import InvalidInput, Result, UnsupportedStudy
from worker.serving.results import checked, from_result


def reference(hu: np.ndarray) -> tuple[np.ndarray, float]:
    """The network in numpy: edge padding, 3 x 3 mean, logistic of (HU - BODY_HU) / HU_PER_LOGIT."""
    padded = np.pad(hu.astype(np.float64), 1, mode="edge")
    rows, cols = hu.shape
    smoothed = sum(padded[r:r + rows, c:c + cols] for r in range(3) for c in range(3)) / 9
    probability = 1 / (1 + np.exp(-(smoothed - BODY_HU) / HU_PER_LOGIT))
    return probability, float(probability.mean())


def hounsfield_of(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return apply_rescale(ds.pixel_array, ds)


def disc(rows: int, cols: int) -> np.ndarray:
    """Where tests/dicom_factory.py puts its bright disc."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    return ((yy - rows / 2) ** 2 + (xx - cols / 2) ** 2) < (min(rows, cols) / 4) ** 2


def neighbourhoods(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels whose 3 x 3 neighbourhood is all in mask, pixels whose neighbourhood is all outside)."""
    padded = np.pad(mask, 1, mode="edge")
    rows, cols = mask.shape
    windows = [padded[r:r + rows, c:c + cols] for r in range(3) for c in range(3)]
    return np.logical_and.reduce(windows), ~np.logical_or.reduce(windows)


@pytest.fixture(scope="module")
def model() -> OnnxBodyModel:
    loaded = OnnxBodyModel()
    loaded.load()
    return loaded


# ---------------------------------------------------------------------------------------------- graph


def test_the_graph_is_valid_onnx_with_free_batch_and_image_size():
    graph = build_graph()
    onnx.checker.check_model(graph, full_check=True)
    (image,) = graph.graph.input
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch", 1, "height", "width"]


def test_the_graph_computes_what_the_numpy_reference_does():
    session = open_session(build_graph())
    assert session.get_providers()[0] == "CPUExecutionProvider"  # the onnxruntime package pinned has no CUDA
    rng = np.random.default_rng(5)
    for batch, rows, cols in ((3, 5, 6), (1, 7, 4), (RUN_IMAGES, 12, 9)):
        hu = rng.uniform(-1100, 400, size=(batch, 1, rows, cols)).astype(np.float32)
        probability, fraction = session.run(None, {"image": hu})
        assert probability.shape == hu.shape and fraction.shape == (batch,)
        for index in range(batch):
            expected, expected_fraction = reference(hu[index, 0])
            np.testing.assert_allclose(probability[index, 0], expected, atol=1e-5)
            assert fraction[index] == pytest.approx(expected_fraction, abs=1e-5)


# ------------------------------------------------------------------------------------ known answers


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEG2000Lossless], ids=["native", "rle", "jpeg2000"])
def test_a_ct_series_gives_the_disc_as_body_in_every_transfer_syntax(tmp_path, model, syntax):
    extra = {"transfer_syntax": syntax} if syntax else {}
    record = write_study(tmp_path, [SeriesSpec("ct", rows=40, cols=48, count=3, **extra)])
    study = as_study([i.path for i in record.instances])
    (answer,) = model.infer_batch([study])
    assert isinstance(answer, Result)
    checked(*from_result(answer), study.index())  # a valid Arterys answer for this study

    (mask,) = answer.parts
    series = study.series[0]
    assert (mask.label, mask.binary_type, mask.series_instance_uid) == ("body", "probability_mask", series.uid)
    assert mask.array.shape == (3, 40, 48) and mask.array.dtype == np.uint8
    inside, outside = neighbourhoods(disc(40, 48))
    fractions = []
    for plane, instance in enumerate(series.instances):
        expected, fraction = reference(hounsfield_of(instance.path))
        np.testing.assert_allclose(mask.array[plane], np.round(expected * 255), atol=1)
        assert (mask.array[plane][inside] == 255).all() and (mask.array[plane][outside] == 0).all()
        fractions.append(fraction)
    assert answer.series_ml_json == {series.uid: {"body_fraction": round(float(np.mean(fractions)), 4)}}
    assert answer.study_ml_json["execution_provider"] == "CPUExecutionProvider"
    assert answer.study_ml_json["body_fraction"] == pytest.approx(disc(40, 48).mean(), abs=0.05)


def test_each_study_of_a_batch_gets_its_own_answer_or_its_own_error(tmp_path, model):
    """Two image sizes (two runs, one longer than RUN_IMAGES), an MR study, an empty study and a study with CT
    and MR, all in one batch."""
    def study(name, *specs):
        return as_study([i.path for i in write_study(tmp_path / name, list(specs)).instances])

    small = study("small", SeriesSpec("ct", rows=16, cols=20, count=2))
    mr = study("mr", SeriesSpec("mr", rows=16, cols=20, count=1, modality="MR"))
    empty = as_study([])
    big = study("big", SeriesSpec("ct", rows=20, cols=12, count=RUN_IMAGES + 3))  # more planes than one run
    mixed = study("mixed", SeriesSpec("ct", rows=16, cols=20, count=1), SeriesSpec("mr", rows=8, cols=8, count=1,
                                                                                   modality="MR"))
    answers = model.infer_batch([small, mr, empty, big, mixed])
    assert isinstance(answers[1], UnsupportedStudy) and "no CT series" in str(answers[1])
    assert isinstance(answers[2], InvalidInput) and "no DICOM instance" in str(answers[2])
    for index, alone in ((0, small), (3, big), (4, mixed)):
        assert isinstance(answers[index], Result), answers[index]
        checked(*from_result(answers[index]), alone.index())
        (solo,) = model.infer_batch([alone])  # the same answer as when it runs on its own
        np.testing.assert_array_equal(answers[index].parts[0].array, solo.parts[0].array)
        assert answers[index].series_ml_json == solo.series_ml_json
    assert answers[3].parts[0].array.shape == (RUN_IMAGES + 3, 20, 12)
    assert answers[4].study_ml_json["skipped_series"] == [mixed.series[1].uid]


def test_a_damaged_file_fails_its_study_alone(tmp_path, model):
    good = write_study(tmp_path / "good", [SeriesSpec("ct", rows=16, cols=20, count=1)])
    bad = write_study(tmp_path / "bad", [SeriesSpec("ct", rows=16, cols=20, count=2)])
    damaged = as_study([i.path for i in bad.instances])
    for instance in damaged.instances:  # the header parsed; the pixel data is then cut short on disk
        data = instance.path.read_bytes()
        instance.path.write_bytes(data[: len(data) - 200])
    answers = model.infer_batch([as_study([i.path for i in good.instances]), damaged])
    assert isinstance(answers[0], Result) and isinstance(answers[1], Exception)


# --------------------------------------------------------------------------------------- in a worker


class BatchOfThree(OnnxBodyModel):
    max_batch_size = 3
    max_batch_delay = 60.0  # the batch starts only once three studies wait


def test_three_callers_are_answered_by_one_batch_each_as_if_alone(tmp_path):
    studies = [write_study(tmp_path / str(n), [SeriesSpec("ct", rows=16 + 4 * n, cols=20, count=n + 1)])
               for n in range(3)]
    loaded = BatchOfThree()
    with serving(loaded, model="onnx-body") as (server, _channel, stub):
        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = list(pool.map(lambda record: infer(stub, {}, dicom_parts([i.path for i in record.instances])),
                                    studies))
        assert server.metrics.registry.get_sample_value("worker_batch_size_sum", {"model": "onnx-body"}) == 3
        assert server.metrics.registry.get_sample_value("worker_batch_size_count", {"model": "onnx-body"}) == 1
    for record, answer in zip(studies, answers, strict=True):
        (solo,) = loaded.infer_batch([as_study([i.path for i in record.instances])])
        assert answer.json["series_ml_json"] == solo.series_ml_json
        assert answer.binaries[0] == solo.parts[0].array.tobytes()
        assert answer.json["parts"][0]["binary_data_shape"]["depth"] == len(record.instances)


def test_the_worker_command_hosts_it_by_its_package_name(tmp_path):
    record = write_study(tmp_path / "study", [SeriesSpec("ct", rows=16, cols=20, count=1)])
    worker = start_worker(tmp_path, "example_models.onnx_body")
    try:
        answer = infer(stub_for(worker.port), {}, dicom_parts([i.path for i in record.instances]))
    finally:
        worker.stop()
    assert answer.json["study_ml_json"]["execution_provider"] == "CPUExecutionProvider"
    assert math.isclose(answer.json["study_ml_json"]["body_fraction"], disc(16, 20).mean(), abs_tol=0.1)
    assert "ONNX Runtime 1.31.1 on CPUExecutionProvider" in worker.log()
