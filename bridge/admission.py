"""Getting a call admitted by some worker of a target: when a refused call is tried again, and for how long.

A call is *admitted* when the worker sends its initial metadata, before any study byte leaves the bridge
(worker/serving/admission.py). A call refused before that (RESOURCE_EXHAUSTED: every place taken; UNAVAILABLE: no
ready worker or a broken connection) has cost nothing, so it is tried again: round_robin gives each new
call the next worker. A full worker is retried, with a short growing pause, for up to `queue_wait`
seconds; 503 comes only when every worker stayed full that long.
"""

from __future__ import annotations

import asyncio
import logging
import random

import grpc

from bridge.channel import WorkerChannel
from bridge.errors import WorkerFailed
from contract import errors as contract_errors
from contract import inference_pb2 as pb
from contract import metadata
from service_runtime.grpc_aio import CALL_ENDED, StreamCall

log = logging.getLogger("bridge.workers")  # with readiness.py: the lines about the workers

FREE_ATTEMPTS = 4  # calls ended before admission, tried again at once
ADMISSION_TIMEOUT = 5.0  # a worker admits or refuses at once; one that does neither is as good as gone
# Ended before admission, nothing lost: unreachable, or the transport's own failure (gRPC reports a call ended
# by the server while the client was still writing its header as INTERNAL, with no error code).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


def worth_retrying(status: grpc.StatusCode, error_code: str) -> tuple[bool, bool]:
    """(free, full) for a call ended before admission: tried again at once because it cost nothing; a worker
    that is full, worth waiting for. Pure."""
    # A worker that is full says so itself (its error code). Without one, RESOURCE_EXHAUSTED is the channel's
    # own (an answer over a gRPC limit): an error, never retried.
    full = status == grpc.StatusCode.RESOURCE_EXHAUSTED and error_code in contract_errors.FULL
    free = full or (status in RETRYABLE and not (status == grpc.StatusCode.INTERNAL and error_code))
    return free, full


async def admit(channel: WorkerChannel, header: pb.InferRequest, timeout: float, call_metadata: tuple,
                queue_wait: float) -> StreamCall:
    """Opens a call that a worker has admitted (its header sent, nothing else); raises WorkerFailed (no worker
    admitted it).

    A call that ends before its admission has cost nothing, so it is tried again at once, up to
    FREE_ATTEMPTS times (round_robin gives each new call the next worker); after that, a refusal by full
    workers is retried with a growing pause for up to `queue_wait` seconds.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = 0
    while True:
        attempts += 1
        call = channel.open_call(max(timeout - (loop.time() - started), 0.001), call_metadata)
        try:
            await call.write(header)
            async with asyncio.timeout(ADMISSION_TIMEOUT):
                admitted = metadata.value(await call.initial_metadata(), metadata.ADMITTED) == metadata.YES
        except CALL_ENDED:
            admitted = False
        except TimeoutError:  # a worker that neither admits nor refuses is hung: try another
            call.cancel()
            log.warning("worker target %s: a worker did not answer a call within %g s", channel.target,
                        ADMISSION_TIMEOUT)
            if attempts < FREE_ATTEMPTS:
                continue
            raise WorkerFailed(grpc.StatusCode.UNAVAILABLE, "no worker answered") from None
        except BaseException:
            call.cancel()
            raise
        if admitted:
            return call
        status = await call.code()
        details = await call.details() or ""
        error_code = metadata.value(await call.trailing_metadata(), metadata.ERROR_CODE)
        free, full = worth_retrying(status, error_code)
        if free:
            if attempts < FREE_ATTEMPTS:
                continue
            if full and loop.time() - started < queue_wait:
                await asyncio.sleep(min(0.005 * 2 ** (attempts - FREE_ATTEMPTS), 0.2) * random.uniform(0.5, 1))
                continue
        raise WorkerFailed(status, details, error_code)
