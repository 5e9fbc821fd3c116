"""bridge.admission's plan: how many workers a request tries, which try waits, and which refusals move on."""

from __future__ import annotations

import grpc
import pytest

from bridge.admission import MAX_WAIT_MS, AttemptPlan, ended_free, wait_ms

Status = grpc.StatusCode


def waits(ready_workers: int, queue_wait: float) -> list[float]:
    """What each call of a request that is refused every time asks its worker to wait, in order."""
    plan = AttemptPlan.for_workers(ready_workers)
    asked, attempt = [], 0
    while True:
        attempt += 1
        asked.append(plan.wait(attempt, queue_wait))
        if not plan.again(attempt, free=True):
            return asked


@pytest.mark.parametrize(("ready_workers", "expected"), [
    (0, [10.0]),  # none counted yet: one call, which waits
    (1, [10.0]),
    (2, [0.0, 10.0]),
    (5, [0.0, 0.0, 0.0, 0.0, 10.0]),
])
def test_each_ready_worker_is_tried_once_and_only_the_last_call_waits(ready_workers, expected):
    assert waits(ready_workers, 10.0) == expected


def test_the_last_call_waits_for_what_is_left_of_the_queue_wait():
    plan = AttemptPlan.for_workers(3)
    assert plan.wait(3, 7.5) == 7.5
    assert plan.wait(3, -0.2) == 0.0  # the earlier calls took it all: answered at once
    assert waits(2, 0.0) == [0.0, 0.0]  # --queue-wait-seconds 0: nobody waits


def test_a_failure_that_cost_something_is_never_tried_again():
    plan = AttemptPlan.for_workers(4)
    assert plan.again(1, free=True)
    assert not plan.again(1, free=False)
    assert not plan.again(4, free=True)  # the bound


@pytest.mark.parametrize(("status", "code", "free"), [
    (Status.RESOURCE_EXHAUSTED, "worker_busy", True),
    (Status.RESOURCE_EXHAUSTED, "spool_full", True),
    (Status.RESOURCE_EXHAUSTED, "", False),  # the channel's own: an answer over a gRPC limit (issue 18, row 6)
    (Status.UNAVAILABLE, "", True),  # unreachable, or a broken connection
    (Status.UNAVAILABLE, "worker_unavailable", True),  # loading, shutting down
    (Status.INTERNAL, "", True),  # the transport's race with the header's write
    (Status.INTERNAL, "worker_error", False),
    (Status.CANCELLED, "", True),  # a worker's gRPC server shutting down with the call not yet handed over
    (Status.CANCELLED, "client_closed_request", False),
    (Status.INVALID_ARGUMENT, "bad_request", False),
    (Status.DEADLINE_EXCEEDED, "", False),
])
def test_which_endings_before_admission_move_on_to_the_next_worker(status, code, free):
    assert ended_free(status, code) is free


def test_the_wait_travels_in_milliseconds_within_the_fields_range():
    assert wait_ms(0) == 0
    assert wait_ms(9.9996) == 10_000
    assert wait_ms(1e9) == MAX_WAIT_MS
