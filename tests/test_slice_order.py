"""dicom_geometry.slice_order: the one slice order of the worker, the test tool and the legacy mock.

The series are real DICOM files (tests.dicom_factory) whose expected order is known by construction.
For each, the worker's `Series.ordered` (on instances parsed by the worker from those files), the test
tool's loading and the legacy mock handler's grouping must all give that order and the same number of
time points, whatever order the files arrive in.
"""

from __future__ import annotations

import io
import itertools

import pytest
from pydicom.dataset import Dataset

from dicom_geometry import POSITION_TOLERANCE_MM, slice_order
from mock_model.legacy import _series as legacy_series
from tests.dicom_factory import (
    SAGITTAL,
    TILTED,
    write_4d_series,
    write_enhanced_series,
    write_repeated_positions,
)
from testtool.loading import load_study
from worker.sdk.study import Series
from worker.serving.instances import parse_instance

CASES = {
    "4d, instance numbers out of time order, TriggerTime": lambda f: write_4d_series(f),
    "4d, TemporalPositionIdentifier": lambda f: write_4d_series(f, temporal="TemporalPositionIdentifier"),
    "4d, AcquisitionTime, tilted, jittered positions": lambda f: write_4d_series(
        f, temporal="AcquisitionTime", orientation=TILTED, jitter=0.004),
    "4d, sagittal": lambda f: write_4d_series(f, orientation=SAGITTAL, positions=4, timepoints=2),
    "enhanced multi-frame, tilted stacks": lambda f: write_enhanced_series(f),
    "enhanced multi-frame, one instance per time point": lambda f: write_enhanced_series(f, timepoints=3),
    "a position sent twice": lambda f: write_repeated_positions(f, regular=False),
    "every position twice, no temporal attribute": lambda f: write_repeated_positions(f, regular=True),
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request, tmp_path_factory):
    return CASES[request.param](tmp_path_factory.mktemp("order") / "series")


def worker_order(case, seed: int) -> Series:
    instances = [parse_instance(index, path) for index, path in enumerate(case.shuffled_paths(seed))]
    return Series.ordered(case.series_uid, instances)


def test_worker_test_tool_and_legacy_mock_agree(case):
    worker = worker_order(case, seed=1)
    study = load_study(case.folder)
    tool = study.series[case.series_uid]
    (legacy, legacy_timepoints), = legacy_series([io.BytesIO(p.read_bytes()) for p in case.shuffled_paths(2)]).values()

    assert [i.sop_instance_uid for i in worker.instances] == case.expected
    assert [i.sop_instance_uid for i in tool] == case.expected
    assert [str(ds.SOPInstanceUID) for ds in legacy] == case.expected
    assert worker.timepoints == legacy_timepoints == study.series_shape(case.series_uid)[0] == case.timepoints
    assert worker.mask_shape()[:2] == study.series_shape(case.series_uid)


def test_the_order_does_not_depend_on_the_order_files_arrive_in(case):
    for seed in (3, 4, 5):
        assert [i.sop_instance_uid for i in worker_order(case, seed).instances] == case.expected


def test_test_tool_slots_follow_the_mask_layout(case):
    """Each frame's (time point, slice) is its place in the flattened order, split into time points."""
    study = load_study(case.folder)
    images = study.series[case.series_uid]
    timepoints, depth = study.series_shape(case.series_uid)
    flat = [(image.timepoint, image.slice_index + frame) for image in images for frame in range(image.frames)]
    assert flat == [divmod(k, depth) for k in range(timepoints * depth)]


# ---------------------------------------------------------------------------------------------------
# The rule on headers alone


def header(number=None, uid="1.2", position=None, orientation=(1, 0, 0, 0, 1, 0), **extra) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = uid
    if number is not None:
        ds.InstanceNumber = number
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def test_no_instance():
    assert slice_order([]).order == ()


def test_without_geometry_instance_number_then_uid_decide():
    headers = [header(2, "1.5"), header(None, "1.1"), header(1, "1.9"), header(2, "1.3")]
    order = slice_order(headers)
    assert order.order == (2, 3, 0, 1)  # 1, then the two 2s by UID, then the one without a number
    assert order.timepoints == 1 and order.depth == 4


def test_without_geometry_temporal_position_identifier_makes_time_points():
    headers = [header(k, f"1.{k}", TemporalPositionIdentifier=2 - k % 2) for k in range(1, 5)]
    order = slice_order(headers)
    assert order.timepoints == 2 and order.depth == 2
    assert order.order == (0, 2, 1, 3)  # TPI 1 (numbers 1, 3), then TPI 2 (numbers 2, 4)
    assert order.timepoint == (0, 1, 0, 1) and order.slice_index == (0, 0, 1, 1)


def test_ties_at_one_position_are_broken_by_the_data_not_the_input_order():
    headers = [header(1, uid, (0, 0, 0)) for uid in ("1.3", "1.1", "1.2")]
    for permutation in itertools.permutations(range(3)):
        shuffled = [headers[k] for k in permutation]
        order = slice_order(shuffled)
        assert [shuffled[k].SOPInstanceUID for k in order.order] == ["1.1", "1.2", "1.3"]
        assert order.timepoints == 3  # one position seen three times: a cine of one slice


def test_positions_within_the_tolerance_are_one_position():
    close = POSITION_TOLERANCE_MM * 0.9
    headers = [header(n, f"1.{n}", (0, 0, z), TriggerTime=t)
               for n, (z, t) in enumerate([(0, 0), (5, 0), (close, 50), (5 - close, 50)], start=1)]
    order = slice_order(headers)
    assert order.timepoints == 2 and order.order == (0, 1, 2, 3)

    apart = [header(n, f"1.{n}", (0, 0, z)) for n, z in enumerate([0, 2 * POSITION_TOLERANCE_MM], start=1)]
    assert slice_order(apart).timepoints == 1


def test_temporal_attributes_rank_time_before_instance_numbers():
    # Instance numbers say the opposite of TriggerTime; TriggerTime wins.
    headers = [header(4 - k // 2 * 2 - k % 2, f"1.{k}", (0, 0, 10 * (k % 2)), TriggerTime=100 * (k // 2))
               for k in range(4)]
    assert slice_order(headers).order == (0, 1, 2, 3)
    # A temporal attribute missing on one instance cannot order the others: instance numbers decide
    # (at z 0: numbers 2 then 4, at z 10: numbers 1 then 3).
    del headers[3].TriggerTime
    assert slice_order(headers).order == (2, 3, 0, 1)


def test_multi_frame_instances_count_their_frames_as_slices():
    headers = [header(2, "1.2", (0, 0, 10), NumberOfFrames=3), header(1, "1.1", (0, 0, 0), NumberOfFrames=2)]
    order = slice_order(headers)
    assert order.order == (1, 0) and order.depth == 5
    assert order.slot(0, 0) == (0, 2) and order.slot(0, 2) == (0, 4) and order.slot(1, 1) == (0, 1)


def test_irregular_repeats_are_one_time_point():
    headers = [header(n, f"1.{n}", (0, 0, z)) for n, z in enumerate([0, 0, 0, 5], start=1)]
    order = slice_order(headers)
    assert order.timepoints == 1 and order.order == (0, 1, 2, 3)
