"""The two grpc.aio bugs service_runtime/grpc_aio.py works around, reproduced on loopback: `python -m
tests.grpc_aio_bugs SCENARIO WAY` prints one JSON line.

Each runs in a process of its own (tests/test_grpc_aio_canaries.py starts it), on a fresh event loop with
nothing else allocating, so that the memory it measures is its own. WAY is `plain` (grpc.aio as it is) or
`workaround` (through service_runtime.grpc_aio.StreamCall).

- `lost-status` (grpc/grpc#36066): a server refuses a stream at its first message while the client is
  still writing; counts the status codes the client reports.
- `read-leak` (grpc/grpc#43360): a client abandons a read of a server stream (its task cancelled while a
  message is in flight), then cancels the call; measures the C heap kept per call (glibc's mallinfo2).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import json
import sys

import grpc

from service_runtime.grpc_aio import CALL_ENDED, StreamCall

SERVICE = "canary.Canary"
MESSAGE = 64 << 10
LOST_STATUS_CALLS = 50
READ_LEAK_CALLS, WARM_UP_CALLS = 300, 100


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_in_use() -> int:
    """Bytes glibc's malloc has handed out and not had back (mapped chunks included)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


async def _refuse_at_once(requests, context):
    async for _ in requests:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused at the first message")


async def _stream_forever(request, context):
    while True:
        yield b"x" * MESSAGE


async def _server() -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Refuse": grpc.stream_stream_rpc_method_handler(_refuse_at_once),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream_forever),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def lost_status(workaround: bool) -> dict:
    server, address = await _server()
    codes = collections.Counter()
    async with grpc.aio.insecure_channel(address) as channel:
        refuse = channel.stream_stream(f"/{SERVICE}/Refuse")
        for _ in range(LOST_STATUS_CALLS):
            call = StreamCall(refuse()) if workaround else refuse()
            try:
                for _ in range(64):
                    await call.write(b"x" * MESSAGE)
            except CALL_ENDED:
                pass
            codes[(await call.code()).name] += 1
    await server.stop(0)
    return {"codes": dict(codes)}


async def read_leak(workaround: bool) -> dict:
    server, address = await _server()
    async with grpc.aio.insecure_channel(address) as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Stream")

        async def abandon_a_read() -> None:
            call = StreamCall(stream(b"")) if workaround else stream(b"")
            await call.read()
            task = asyncio.ensure_future(call.read())
            await asyncio.sleep(0)  # the read is under way, a message arriving
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            call.cancel()

        for _ in range(WARM_UP_CALLS):
            await abandon_a_read()
        await asyncio.sleep(0.2)
        gc.collect()
        before = heap_in_use()
        for _ in range(READ_LEAK_CALLS):
            await abandon_a_read()
        await asyncio.sleep(0.2)
        gc.collect()
        kept = heap_in_use() - before
    await server.stop(0)
    return {"bytes_kept_per_call": kept / READ_LEAK_CALLS, "message_bytes": MESSAGE}


SCENARIOS = {"lost-status": lost_status, "read-leak": read_leak}

if __name__ == "__main__":
    scenario, way = sys.argv[1], sys.argv[2]
    print(json.dumps(asyncio.run(SCENARIOS[scenario](way == "workaround"))))
