"""What the number of gRPC messages costs a small study's call, on each side (why the request stream bundles).

One grpc.aio client and one grpc.aio server process, both with the contract's stream options, on loopback.
Each call sends a one-part study the way the bridge can: every message alone (header; the worker's
admission; part, chunk, end), the header alone then the rest in one bundle (what the bridge does with a
worker that reads bundles), or everything in one message. The server reads every message, admits after the
first, and answers with two messages. Rounds alternate the ways; CPU per call comes from each process's
own clock.

    .venv/bin/python -m benchmarks.grpc_messages [--calls 2000] [--rounds 3] [--study-bytes 525000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time

import grpc

from contract import inference_pb2 as pb
from contract import wire
from contract.limits import stream_options

WAYS = ("one by one", "header, then a bundle", "all in one")


def _process_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _serve(port: int, ready) -> None:
    async def infer(requests, context):
        first = True
        async for _ in requests:
            if first:
                await context.send_initial_metadata((("admitted", "1"),))
                first = False
        yield b"r" * 300
        yield b"b" * 250

    server = grpc.aio.server(options=stream_options())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Messages", {"Infer": grpc.stream_stream_rpc_method_handler(infer)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    ready.set()
    await server.wait_for_termination()


def _server_process(port: int, ready) -> None:
    asyncio.run(_serve(port, ready))


def _messages(way: str, study_bytes: int) -> list[bytes]:
    header = pb.InferRequest(header=pb.RequestHeader(request_json=b'{"inference_command": "x"}', request_id="b"))
    rest = [pb.InferRequest(part=pb.PartHeader(kind=pb.PART_KIND_DICOM, content_type="application/dicom")),
            wire.Chunk([b"d" * study_bytes]), pb.InferRequest(end=pb.RequestEnd(part_count=1))]
    if way == "one by one":
        return [wire.request_message([message]) for message in (header, *rest)]
    if way == "header, then a bundle":
        return [wire.request_message([header]), wire.request_message(rest)]
    return [wire.request_message([header, *rest])]


async def _calls(port: int, messages: list[bytes], calls: int) -> tuple[float, float]:
    """(client CPU seconds, wall seconds) per call."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=stream_options())
    infer = channel.stream_stream("/bench.Messages/Infer")

    async def one() -> None:
        call = infer()
        await call.write(messages[0])
        await call.initial_metadata()  # admission, as the bridge waits for it
        for message in messages[1:]:
            await call.write(message)
        await call.done_writing()
        async for _ in call:
            pass

    for _ in range(100):
        await one()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await one()
    result = ((time.process_time() - cpu) / calls, (time.perf_counter() - wall) / calls)
    await channel.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--study-bytes", type=int, default=525_000)
    args = parser.parse_args()
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=_server_process, args=(port, ready), daemon=True)
    server.start()
    ready.wait(30)
    seen: dict[str, list[tuple[float, float, float]]] = {way: [] for way in WAYS}
    try:
        for _ in range(args.rounds):
            for way in WAYS:
                before = _process_cpu(server.pid)
                client, wall = asyncio.run(_calls(port, _messages(way, args.study_bytes), args.calls))
                seen[way].append((client, (_process_cpu(server.pid) - before) / args.calls, wall))
    finally:
        server.terminate()
    print(f"{args.study_bytes:,}-byte study, {args.calls} calls x {args.rounds} rounds; median (min..max) per call, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| way | messages | client CPU µs | server CPU µs | wall µs |\n| --- | --- | --- | --- | --- |")
    for way in WAYS:
        columns = [[row[i] * 1e6 for row in seen[way]] for i in range(3)]
        cells = [f"{statistics.median(c):,.0f} ({min(c):,.0f}..{max(c):,.0f})" for c in columns]
        print(f"| {way} | {len(_messages(way, 1))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
