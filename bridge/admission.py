"""Getting a call admitted by some worker of a target: how many workers a request tries, and which try waits.

A call is *admitted* when the worker sends its initial metadata, before any study byte leaves the bridge
(worker/serving/admission.py). A call refused before that (RESOURCE_EXHAUSTED: every place taken; UNAVAILABLE:
no ready worker or a broken connection) has cost nothing, so it is tried on the next worker: round_robin
gives each new call the next one. A request makes at most as many calls as its route has ready workers
(bridge/readiness.py counts them), so each worker is called at most once when no other request's call comes
in between (and never more than that count in all). Every call but the last asks for an answer at once;
the last asks its worker to keep it, parked, until a place frees there, for what is left of `queue_wait`
(the header's `admission_wait_ms`). A request that finds every worker full thus costs each one call and
waits without asking again; 503 comes when that wait ends. The attempts write no log line of their own,
except one when a worker did not answer at all: a refusal that ends the request is logged once, with what
was tried (bridge/inference.py).

A small study read whole goes with its header in one message (an InferWhole call): the worker admits,
refuses or parks it as it would the header alone (a parked one counts for its study's bytes there), and a
refused one is sent again whole to the next worker. A worker that answers UNIMPLEMENTED predates
InferWhole: the try is made again as an Infer call, and the channel sends none for a while
(bridge/channel.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from bridge.channel import WorkerChannel
from bridge.errors import WorkerFailed
from contract import errors as contract_errors
from contract import inference_pb2 as pb
from contract import metadata, wire
from contract.limits import BUNDLE_MESSAGES
from service_runtime.grpc_aio import CALL_ENDED, StreamCall

log = logging.getLogger("bridge.workers")  # with readiness.py: the lines about the workers

# A worker admits or refuses at once (or, asked to wait, when its wait ends): one that does neither this
# long after is as good as gone.
ADMISSION_TIMEOUT = 5.0
# Ended before admission, nothing lost: unreachable, or the transport's own failure (gRPC reports a call ended
# by the server while the client was still writing its header as INTERNAL, with no error code), or a call the
# worker's gRPC server had taken but not yet handed to the servicer when it began shutting down (CANCELLED,
# with no error code: seen when a worker was stopped mid-load, 1 request of 400 answered 499; the bridge
# itself cancels a call only when its request is over or the worker hung, which never gets here).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED)
MAX_WAIT_MS = (1 << 32) - 1  # admission_wait_ms is a uint32


def predates_whole_calls(status: grpc.StatusCode, error_code: str) -> bool:
    """Whether an InferWhole call ended as a worker that does not have the method ends it. Pure."""
    return status == grpc.StatusCode.UNIMPLEMENTED and not error_code


def ended_free(status: grpc.StatusCode, error_code: str) -> bool:
    """Whether a call that ended before admission cost nothing, so that the next worker may be tried: a full
    worker's refusal, or a call that never reached one. Pure."""
    # A worker that is full says so itself (its error code). Without one, RESOURCE_EXHAUSTED is the channel's
    # own (an answer over a gRPC limit): an error, never retried.
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return error_code in contract_errors.FULL
    return status in RETRYABLE and not (status != grpc.StatusCode.UNAVAILABLE and error_code)


@dataclass(frozen=True)
class AttemptPlan:
    """How one request spreads its calls over a route's workers: `attempts` calls at most, the last one
    waiting at its worker for a place. Pure."""

    attempts: int

    @classmethod
    def for_workers(cls, ready_workers: int) -> AttemptPlan:
        # No count yet, or none ready: one call, which waits (a worker that comes up may still take it).
        return cls(max(ready_workers, 1))

    def wait(self, attempt: int, queue_wait_left: float) -> float:
        """Seconds call `attempt` (from 1) asks its worker to wait for a place: the last gets what is left of
        the queue wait, the others none (they are answered at once)."""
        return max(queue_wait_left, 0.0) if attempt >= self.attempts else 0.0

    def again(self, attempt: int, free: bool) -> bool:
        """Whether, after call `attempt` ended before admission, the next worker is tried."""
        return free and attempt < self.attempts


def wait_ms(seconds: float) -> int:
    """`seconds` as the header's admission_wait_ms."""
    return min(round(seconds * 1000), MAX_WAIT_MS)


@dataclass(frozen=True)
class Admitted:
    """A call a worker has admitted; `whole`: the study went with the header (InferWhole), nothing is left to
    send."""

    call: StreamCall
    whole: bool


async def admit(channel: WorkerChannel, header: pb.RequestHeader, timeout: float, call_metadata: tuple,
                queue_wait: float, ready_workers: int, study: list | None = None) -> Admitted:
    """Opens a call that a worker has admitted (its header sent and, for a `study` read whole, the request
    messages after the header, when the channel sends whole calls), trying the workers as AttemptPlan says;
    raises WorkerFailed (no worker admitted it), saying what was tried."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    plan = AttemptPlan.for_workers(ready_workers)
    hung = 0  # workers that neither admitted nor refused
    attempt = 0
    # A study of more messages than one bundle holds (tiny parts past the default --max-parts) streams.
    whole = study is not None and len(study) < BUNDLE_MESSAGES and channel.sends_whole_calls()
    while True:
        attempt += 1
        wait = plan.wait(attempt, queue_wait - (loop.time() - started))
        header.admission_wait_ms = wait_ms(wait)
        left = max(timeout - (loop.time() - started), 0.001)
        if whole:
            call = channel.open_whole_call(wire.request_message((pb.InferRequest(header=header), *study)), left,
                                           call_metadata)
        else:
            call = channel.open_call(left, call_metadata)
        try:
            if not whole:
                await call.write(pb.InferRequest(header=header))
            async with asyncio.timeout(ADMISSION_TIMEOUT + wait):
                admitted = metadata.value(await call.initial_metadata(), metadata.ADMITTED) == metadata.YES
        except CALL_ENDED:
            admitted = False
        except TimeoutError:  # a worker that neither admits nor refuses is hung: try another
            call.cancel()
            hung += 1
            if plan.again(attempt, free=True):
                continue
            raise WorkerFailed(grpc.StatusCode.UNAVAILABLE, "no worker answered",
                               tried=_tried(attempt, hung)) from None
        except BaseException:
            call.cancel()
            raise
        if admitted:
            if hung:  # the one line about this request's attempts: a hung worker is news
                log.warning("worker target %s: %s", channel.target, _tried(attempt, hung))
            return Admitted(call, whole)
        status = await call.code()
        details = await call.details() or ""
        error_code = metadata.value(await call.trailing_metadata(), metadata.ERROR_CODE)
        if whole and predates_whole_calls(status, error_code):
            pause = channel.whole_calls_unimplemented()
            # Once a pause (a minute): a fleet in the middle of an upgrade is news, each request of it is not.
            log.info("worker target %s: a worker does not take InferWhole calls (it predates them); small studies "
                     "go as Infer calls for %g s", channel.target, pause)
            whole, attempt = False, attempt - 1  # the same try again, as an Infer call
            continue
        if plan.again(attempt, ended_free(status, error_code)):
            continue
        raise WorkerFailed(status, details, error_code, tried=_tried(attempt, hung))


def _tried(calls: int, hung: int) -> str:
    """What a request's attempts were, for its log line."""
    said = f"{calls} call{'s' if calls != 1 else ''} to the target's workers"
    return said + (f", {hung} of them not answered within {ADMISSION_TIMEOUT:g} s" if hung else "")
