"""What a call receiving its study may hold and how slowly it may send: worker/serving/rate.py,
worker/serving/spool.py's budget and part writer, and admission by bytes (worker/serving/admission.py). The
processes' side is in tests/test_hostile_worker.py."""

from __future__ import annotations

import asyncio
import os

import pytest
from prometheus_client import CollectorRegistry

from contract.limits import CHUNK_BYTES
from worker.serving.admission import RECEIVING_CALL_BYTES, Admission
from worker.serving.errors import SpoolFull
from worker.serving.metrics import WorkerMetrics
from worker.serving.rate import MinimumRate, TooSlow
from worker.serving.receive import ReceivedPart
from worker.serving.spool import COALESCE_BYTES, PartWriter, Spool, StoreBudget, spool_limit

RATE, WINDOW = 64 << 10, 20.0
NEED = RATE * int(WINDOW) - CHUNK_BYTES


# ------------------------------------------------------------------------------------------ minimum rate


def test_a_trickle_is_ended_at_the_end_of_its_first_window():
    rate = MinimumRate(RATE, WINDOW)
    rate.received(1)
    rate.waited_for(19.9)
    assert rate.wait_left() == pytest.approx(0.1)
    with pytest.raises(TooSlow, match=r"sent 1 bytes in 20 s of waiting, fewer than the 262,144"):
        rate.waited_for(0.1)


def test_a_client_at_the_bridges_minimum_passes_through_the_bridges_one_chunk_lag():
    """The bridge forwards a client at exactly 64 KiB/s as one 1 MiB message every 16 s: every 20 s window
    of the worker sees one, at least, and that is enough."""
    rate = MinimumRate(RATE, WINDOW)
    for _ in range(20):  # 320 s
        rate.waited_for(CHUNK_BYTES / RATE)
        rate.received(CHUNK_BYTES)


def test_a_fast_start_carries_its_own_window_only():
    rate = MinimumRate(RATE, WINDOW)
    rate.received(100 << 20)
    assert rate.wait_left() == pytest.approx(2 * WINDOW)  # this window is paid for, the next one is not
    rate.waited_for(WINDOW)
    rate.received(NEED - 1)
    with pytest.raises(TooSlow):
        rate.waited_for(WINDOW)


def test_a_rate_of_zero_never_ends_a_stream():
    rate = MinimumRate(0, WINDOW)
    rate.waited_for(10_000)
    assert rate.wait_left() == float("inf")


# --------------------------------------------------------------------------------------- spool budget


def part(index: int = 0) -> ReceivedPart:
    return ReceivedPart(index, 2, "application/dicom", "", "")


def test_one_byte_writes_are_held_as_bytes_not_as_one_view_each(tmp_path):
    """Row 9 of issue 18: a view per 1-byte message held ~200 bytes of bookkeeping per byte."""
    spool = Spool(tmp_path, 16 << 20)
    writer = PartWriter(part(), spool)
    message = memoryview(b"\x1a\x01x")[2:]  # what contract.wire hands over: a view into gRPC's message
    for _ in range(200_000):
        writer.write(message)
    assert len(writer.chunks) == -(-200_000 // COALESCE_BYTES)  # a few buffers, not 200,000 views
    big = memoryview(bytes(COALESCE_BYTES))
    writer.write(big)
    assert writer.chunks[-1] is big  # big messages stay views: no copy
    writer.close()
    assert writer.part.data == b"x" * 200_000 + bytes(COALESCE_BYTES)


def test_memory_beyond_the_workers_budget_goes_to_the_spool_and_is_counted_there(tmp_path):
    budget = StoreBudget(memory_limit=1000, spool_limit=10_000)
    first, second = Spool(tmp_path, 800, budget), Spool(tmp_path, 800, budget)
    a, b = PartWriter(part(0), first), PartWriter(part(1), second)
    a.write(b"a" * 700)
    b.write(b"b" * 200)
    assert (budget.memory, budget.spool) == (900, 0)
    b.write(b"b" * 200)  # the worker's 1000 would be passed: this part moves to disk, with what it had
    assert (budget.memory, budget.spool) == (700, 400) and b.part.path is not None
    b.close()
    assert b.part.path.read_bytes() == b"b" * 400
    first.cleanup()
    second.cleanup()
    assert (budget.memory, budget.spool) == (0, 0)


def test_a_call_that_would_pass_the_spools_limit_is_ended(tmp_path):
    budget = StoreBudget(memory_limit=0, spool_limit=1000)
    spool = Spool(tmp_path, 0, budget)
    writer = PartWriter(part(), spool)
    writer.write(b"x" * 900)
    with pytest.raises(SpoolFull, match="hold 900 of the 1,000 bytes its --max-spool-bytes allows"):
        writer.write(b"x" * 200)
    writer.close()
    spool.cleanup()
    assert budget.spool == 0 and not budget.spool_full


def test_a_full_file_system_is_spool_full_not_a_traceback(tmp_path):
    """ENOSPC from the kernel itself: /dev/full refuses every write."""
    spool = Spool(tmp_path, 0, StoreBudget(0, 1 << 30))
    writer = PartWriter(part(), spool)
    writer.part.path = tmp_path / "part"
    writer.fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(SpoolFull, match="file system is full"):
        writer.write(b"x" * 100)
    writer.close()


def test_spool_limit_zero_is_a_share_of_the_free_space(tmp_path):
    assert spool_limit(12345, tmp_path) == 12345
    info = os.statvfs(tmp_path)
    assert 0 < spool_limit(0, tmp_path) <= info.f_bavail * info.f_frsize


# ------------------------------------------------------------------------------------------- admission


def test_receiving_calls_are_bounded_by_memory_not_by_a_small_count():
    async def scenario():
        metrics = WorkerMetrics(CollectorRegistry())
        budget = StoreBudget(memory_limit=64 << 20, spool_limit=1 << 30)
        admission = Admission(concurrency=1, queue_size=2, metrics=metrics, store=budget)
        most = (64 << 20) // 8 // RECEIVING_CALL_BYTES
        tickets = [admission.admit() for _ in range(most)]
        assert all(tickets) and most == 128
        assert admission.admit() is None
        assert "128 studies are arriving" in admission.refusal()
        for ticket in tickets:
            ticket.leave()

    asyncio.run(scenario())


def test_a_full_spool_refuses_new_calls_until_it_has_room():
    async def scenario():
        budget = StoreBudget(memory_limit=512 << 20, spool_limit=1000)
        admission = Admission(1, 2, WorkerMetrics(CollectorRegistry()), store=budget)
        budget.take_spool(1000)
        assert admission.admit() is None
        assert "the worker's spool is full" in admission.refusal()
        budget.give_spool(1)
        ticket = admission.admit()
        assert ticket is not None
        ticket.leave()

    asyncio.run(scenario())
