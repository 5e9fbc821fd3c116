"""grpc.aio as the services use it, with its known bugs worked around in this one place.

Client side (the bridge): `StreamCall` wraps a stream-stream call and offers only what the bridge does with
one (write, finish writing, read, metadata, status, cancel, be told of its end), so that every use goes
through the two workarounds below, and nothing reaches the grpc.aio call behind it:

1. **Reads run shielded, in a task of their own** (grpc/grpc#43360). Cancelling the task that awaits a
   read drops the read's batch with what it holds, the message being received included: every client that
   hung up while its answer streamed left about 15 KB in the bridge for good (1,000 aborts: +15 MB; with
   the workaround +0.3 MB). A cancelled caller leaves the read to complete, which it does at once, since
   every path that abandons a call cancels the call. Writes are not shielded: a write blocked by flow
   control when its call is cancelled never completes, and its task would be destroyed pending.
2. **The first status is kept** (grpc/grpc#36066; fix proposed in grpc/grpc#43486). When the worker ends a
   call while a write of the bridge is in flight (it refuses a damaged study at its first part while the
   rest still streams), the failed write sets INTERNAL "Internal error from Core", with no metadata, over
   the status that had arrived: the client's 400 became a 502 (one request in six in
   tests/test_fuzz_regressions.py). Every status change runs the done callbacks, the first with the
   worker's status; `StreamCall` keeps that one and reports it.

Server side (the worker): `STREAM_BROKE`, what a servicer's read or write raises when its caller hung up
or its connection broke while the operation was under way: grpc.aio raises its private ExecuteBatchError
there rather than a cancellation.

tests/test_grpc_aio_canaries.py reproduces each bug with plain grpc.aio and fails the day the pinned
grpcio no longer has it: then the workaround goes (docs/decisions.md, "The grpc.aio workarounds").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from grpc._cython.cygrpc import ExecuteBatchError  # private: grpc.aio has no public name for this failure

STREAM_BROKE = ExecuteBatchError
# What writing to a call that has already ended raises: the call's own status says what happened.
CALL_ENDED = (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError)


class StreamCall:
    """A grpc.aio streaming call (the bridge's are stream-stream), with reads shielded and the first status
    kept (see the module)."""

    def __init__(self, call: grpc.aio.StreamStreamCall | grpc.aio.UnaryStreamCall) -> None:
        self._call = call
        self._first: tuple | None = None  # (code, details, trailing metadata) as the first status said
        self._on_end: list[Callable[[grpc.StatusCode | None], None]] = []
        call.add_done_callback(self._ended)

    async def write(self, message) -> None:
        await self._call.write(message)

    async def done_writing(self) -> None:
        await self._call.done_writing()

    async def read(self):
        """The next message, or grpc.aio.EOF; a read its caller abandons still completes on its own."""
        read = asyncio.ensure_future(self._call.read())
        read.add_done_callback(retrieve_outcome)  # a read left behind by a cancelled caller ends unheard
        return await asyncio.shield(read)

    async def initial_metadata(self):
        return await self._call.initial_metadata()

    async def code(self) -> grpc.StatusCode:
        return self._first[0] if self._first else await self._call.code()

    async def details(self) -> str:
        return self._first[1] if self._first else await self._call.details()

    async def trailing_metadata(self):
        return self._first[2] if self._first else await self._call.trailing_metadata()

    def cancel(self) -> bool:
        return self._call.cancel()

    def done(self) -> bool:
        return self._call.done()

    def on_end(self, callback: Callable[[grpc.StatusCode | None], None]) -> None:
        """Calls `callback` once with the call's first status code (None if it could not be read), when the call
        ends, or at once if it has."""
        if self._first is not None or self._call.done():
            callback(self._first[0] if self._first else None)
        else:
            self._on_end.append(callback)

    def _ended(self, call) -> None:
        if self._first is not None:
            return  # a later status change (grpc/grpc#36066): the first one stands
        try:  # the status is set when callbacks run, so these coroutines finish without waiting
            self._first = (_value_now(call.code()), _value_now(call.details()), _value_now(call.trailing_metadata()))
        except Exception:  # never break gRPC's own callback; the call's status is used then
            self._first = None
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(self._first[0] if self._first else None)


def retrieve_outcome(task: asyncio.Future) -> None:
    """Marks a task's exception as seen: for tasks whose end nobody may await (asyncio would log "Task exception
    was never retrieved" for a read that failed after its call was abandoned)."""
    if not task.cancelled():
        task.exception()


def _value_now(coroutine):
    """The value of a coroutine that completes without suspending (else RuntimeError)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine did not finish at once")
