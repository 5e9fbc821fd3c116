"""worker.serving.admission: calls receiving their study and calls waiting for the model are bounded apart."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from worker.serving.admission import Admission
from worker.serving.metrics import WorkerMetrics


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
