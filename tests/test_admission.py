"""worker.serving.admission: calls receiving their study and calls waiting for the model are bounded apart."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from worker.serving import admission as admission_module
from worker.serving.admission import RECEIVING_CALL_BYTES, Admission, Ticket
from worker.serving.metrics import WorkerMetrics
from worker.serving.spool import StoreBudget


def gauges(metrics: WorkerMetrics) -> tuple[float, float, float]:
    value = lambda gauge: gauge._value.get()  # noqa: E731
    return value(metrics.receiving), value(metrics.queue_depth), value(metrics.inflight)


def test_stalled_uploads_do_not_take_the_models_queue():
    async def scenario():
        metrics = WorkerMetrics(CollectorRegistry())
        admission = Admission(concurrency=1, queue_size=2, metrics=metrics, max_receiving=5)
        stalled = [admission.admit() for _ in range(4)]  # uploads that never finish
        assert all(stalled) and gauges(metrics) == (4, 0, 0)
        # The model's queue is untouched: three calls whose studies arrive are served or queued.
        arrived = [admission.admit() for _ in range(1)]
        await arrived[0].slot()
        assert gauges(metrics) == (4, 0, 1)
        stalled.append(admission.admit())  # a fifth upload stalls: the last receiving place
        assert admission.admit() is None
        assert "5 studies are arriving (what its --max-study-memory-mib allows for, or its --max-receiving)" in (
            admission.refusal())
        stalled.pop(0).leave()  # the bridge ended two slow uploads
        stalled.pop(0).leave()
        second = admission.admit()
        waiting = asyncio.ensure_future(second.slot())
        await asyncio.sleep(0)
        assert gauges(metrics) == (3, 1, 1)
        third = admission.admit()
        third_waiting = asyncio.ensure_future(third.slot())
        await asyncio.sleep(0)
        assert gauges(metrics) == (3, 2, 1)
        # One running and two waiting fill concurrency + queue_size: a new call would only wait behind them.
        assert admission.admit() is None
        assert "1 inference(s) running and 2 waiting for the model" in admission.refusal()
        arrived[0].release_slot()
        arrived[0].leave()
        await waiting
        assert gauges(metrics) == (3, 1, 1)
        second.release_slot()
        second.leave()
        await third_waiting
        third.release_slot()
        third.leave()
        for ticket in stalled:
            ticket.leave()
            ticket.leave()  # twice is harmless
        assert gauges(metrics) == (0, 0, 0) and admission.admitted == 0

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ calls parked for a place


async def full_admission(max_receiving: int = 8) -> tuple[Admission, WorkerMetrics, Ticket]:
    """One slot, no queue, its one place taken by a call whose study has arrived and runs in the model."""
    metrics = WorkerMetrics(CollectorRegistry())
    admission = Admission(concurrency=1, queue_size=0, metrics=metrics, max_receiving=max_receiving)
    holder = admission.admit()
    await holder.slot()
    return admission, metrics, holder


async def settle() -> None:
    """Lets the woken tasks run (a wake-up passes through a few callbacks)."""
    for _ in range(5):
        await asyncio.sleep(0)


def end(ticket: Ticket) -> None:
    ticket.release_slot()
    ticket.leave()


def parked(metrics: WorkerMetrics) -> float:
    return metrics.parked._value.get()


def test_parked_calls_are_admitted_in_arrival_order_as_places_free():
    async def scenario():
        admission, metrics, holder = await full_admission()
        assert admission.admit() is None
        order: list[str] = []

        async def park(name: str):
            ticket = await admission.wait_for_place(30)
            order.append(name)
            return ticket

        calls = {name: asyncio.ensure_future(park(name)) for name in ("first", "second", "third")}
        await settle()
        assert parked(metrics) == 3 and admission.parked == 3
        # A call that asks for an answer at once is not admitted ahead of them, even with a place free.
        assert admission.admit() is None
        end(holder)  # the place frees: the first parked call gets it, and only it
        await settle()
        assert order == ["first"] and admission.parked == 2 and parked(metrics) == 2
        first = await calls["first"]
        assert first is not None and admission.receiving == 1
        await first.slot()  # its study arrives: the place is taken again, nobody else wakes
        await settle()
        assert order == ["first"]
        first.release_slot()
        first.leave()
        await settle()
        assert order == ["first", "second"]
        second = await calls["second"]
        second.leave()  # ended while still receiving: its place goes on
        await settle()
        assert order == ["first", "second", "third"]
        (await calls["third"]).leave()
        assert admission.parked == 0 and parked(metrics) == 0 and admission.admitted == 0

    asyncio.run(scenario())


def test_a_parked_call_whose_wait_ends_is_refused_and_forgotten():
    async def scenario():
        admission, metrics, holder = await full_admission()
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await admission.wait_for_place(0.05) is None
        assert loop.time() - started >= 0.05
        assert admission.parked == 0 and parked(metrics) == 0
        assert "1 inference(s) running and 0 waiting for the model" in admission.refusal()  # the message of today
        assert await admission.wait_for_place(0) is None  # no wait asked: refused at once, never parked
        end(holder)
        assert admission.admit() is not None  # nothing left behind that would jump the queue

    asyncio.run(scenario())


def test_a_parked_call_cancelled_by_its_caller_is_forgotten():
    async def scenario():
        admission, metrics, holder = await full_admission()
        gone = asyncio.ensure_future(admission.wait_for_place(30))
        waiting = asyncio.ensure_future(admission.wait_for_place(30))
        await settle()
        assert admission.parked == 2
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert admission.parked == 1 and parked(metrics) == 1
        end(holder)  # the freed place goes to the call still waiting, not to the one that left
        ticket = await waiting
        assert ticket is not None and admission.admitted == 1
        # A place handed over just as its caller leaves is passed on, not lost.
        late = asyncio.ensure_future(admission.wait_for_place(30))
        after = asyncio.ensure_future(admission.wait_for_place(30))
        await settle()
        ticket.leave()  # hands the place to `late`...
        late.cancel()  # ...whose caller leaves before it runs
        await asyncio.gather(late, return_exceptions=True)
        assert late.cancelled()
        assert (await after) is not None and admission.admitted == 1 and admission.parked == 0

    asyncio.run(scenario())


def test_parked_calls_share_the_receiving_calls_bound():
    async def scenario():
        admission, metrics, holder = await full_admission(max_receiving=3)
        waiting = [asyncio.ensure_future(admission.wait_for_place(30)) for _ in range(3)]
        await settle()
        assert admission.parked == 3
        assert await admission.wait_for_place(30) is None  # a fourth would pass the bound: refused at once
        assert "0 studies are arriving and 3 more wait for a place" in admission.refusal()
        for call in waiting:
            call.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert admission.parked == 0
        end(holder)

    asyncio.run(scenario())


def test_a_parked_call_that_keeps_its_study_counts_for_its_bytes():
    async def scenario():
        admission, metrics, holder = await full_admission(max_receiving=8)
        # An InferWhole call of 3 x 64 KiB: one call and three more for its study.
        whole = asyncio.ensure_future(admission.wait_for_place(30, holds=3 * RECEIVING_CALL_BYTES))
        await settle()
        assert admission.parked == 1
        # 4 + 5 would pass 8: refused at once; a header alone (1) still parks, and one more of 2 (1 byte: 1 + 1).
        assert await admission.wait_for_place(30, holds=4 * RECEIVING_CALL_BYTES) is None
        alone = asyncio.ensure_future(admission.wait_for_place(30))
        tiny = asyncio.ensure_future(admission.wait_for_place(30, holds=1))
        await settle()
        assert admission.parked == 3
        assert await admission.wait_for_place(30, holds=1) is None  # 4 + 1 + 2 + 2 would pass 8
        assert admission.refusal(holds=1) == ("0 studies are arriving and 3 more wait for a place (this call's study "
                                              "would count as 1 more) (what its --max-study-memory-mib allows for, "
                                              "or its --max-receiving)")
        assert admission.refusal().startswith("1 inference(s) running")  # a header alone would still have parked
        end(holder)  # a place frees: the first parked call takes it, and gives back what it counted for
        assert (ticket := await whole) is not None and admission.parked == 2
        assert admission.receiving == 1
        later = asyncio.ensure_future(admission.wait_for_place(30, holds=3 * RECEIVING_CALL_BYTES))
        await settle()
        assert admission.parked == 3  # 1 receiving + 1 + 2 + 4 = 8: within the bound again
        for call in (alone, tiny, later):
            call.cancel()
        await asyncio.gather(alone, tiny, later, return_exceptions=True)
        assert admission.parked == 0 and parked(metrics) == 0
        largest = asyncio.ensure_future(admission.wait_for_place(30, holds=6 * RECEIVING_CALL_BYTES))
        await settle()
        assert admission.parked == 1  # 1 receiving + 7 = 8: parks
        largest.cancel()
        await asyncio.gather(largest, return_exceptions=True)
        ticket.leave()

    asyncio.run(scenario())


def test_a_full_spool_with_room_again_wakes_a_parked_call():
    async def scenario():
        store = StoreBudget(512 << 20, 100)
        metrics = WorkerMetrics(CollectorRegistry())
        admission = Admission(concurrency=1, queue_size=4, metrics=metrics, store=store)
        store.take_spool(100)  # studies arriving fill the spool
        assert admission.admit() is None and admission.refusal().startswith("the worker's spool is full")
        waiting = asyncio.ensure_future(admission.wait_for_place(30))
        await settle()
        assert admission.parked == 1
        store.give_spool(40)  # a call ended and its files were removed
        ticket = await waiting
        assert ticket is not None
        ticket.leave()

    asyncio.run(scenario())


def test_shutting_down_refuses_the_parked_calls_at_once():
    async def scenario():
        admission, metrics, holder = await full_admission()
        waiting = [asyncio.ensure_future(admission.wait_for_place(30)) for _ in range(2)]
        await settle()
        admission.close()
        assert await asyncio.gather(*waiting) == [None, None]
        assert admission.parked == 0 and parked(metrics) == 0
        end(holder)
        assert admission.admit() is None and await admission.wait_for_place(30) is None  # closed for good

    asyncio.run(scenario())


def test_an_admitted_parked_call_keeps_its_place_while_its_study_arrives_for_a_while(monkeypatch):
    monkeypatch.setattr(admission_module, "RESERVED_SECONDS", 0.05)

    async def scenario():
        admission, metrics, holder = await full_admission()
        woken = asyncio.ensure_future(admission.wait_for_place(30))
        behind = asyncio.ensure_future(admission.wait_for_place(30))
        await settle()
        end(holder)
        slow = await woken
        # Its place is kept: neither the next parked call nor a newcomer takes it while its study arrives.
        assert admission.reserved == 1 and admission.parked == 1 and admission.admit() is None
        monkeypatch.setattr(admission_module, "RESERVED_SECONDS", 30)  # for the next one
        # Its study takes longer than RESERVED_SECONDS: it holds no place any more, and the next parked call
        # is admitted to the place, which it keeps now.
        next_one = await behind
        assert next_one is not None and admission.receiving == 2 and admission.reserved == 1
        await next_one.slot()  # its study arrives, before the slow one's: it takes the place, nothing left over
        assert admission.reserved == 0 and admission.arrived == 1
        slow.leave()
        next_one.release_slot()
        next_one.leave()
        assert (admission.admitted, admission.reserved, admission.parked) == (0, 0, 0)

    asyncio.run(scenario())
