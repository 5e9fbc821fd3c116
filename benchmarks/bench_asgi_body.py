"""What granian's ASGI `send()` costs per answer byte, by the type of the body it is handed.

The bridge streams answers from gRPC messages, which arrive as memoryviews (contract/wire.py). granian
takes a `bytes` body in one copy but reads any other buffer element by element (its Rust side extracts the
body as a sequence when it is not bytes): measured here on the bridge's own HTTP front (bridge/front.py)
with an ASGI app that answers 64 MiB in 1 MiB pieces, read by a plain socket client in this process.

    .venv/bin/python -m benchmarks.bench_asgi_body [--mib 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time

from bridge.config import HttpLimits
from bridge.front import HttpFront

PIECE = 1 << 20


def make_app(total: int, as_bytes: bool):
    payload = bytearray(b"x" * PIECE)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(total).encode())]})
        view = memoryview(payload)
        for sent in range(0, total, PIECE):
            piece = view[: min(PIECE, total - sent)]
            await send({"type": "http.response.body", "body": bytes(piece) if as_bytes else piece,
                        "more_body": sent + PIECE < total})

    return app


async def fetch(port: int, total: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        buffer = bytearray(1 << 20)
        received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 65536)
        received = len(head.partition(b"\r\n\r\n")[2])
        while received < total:
            received += await loop.sock_recv_into(sock, buffer)
    finally:
        sock.close()


async def measure(total: int, as_bytes: bool, repeat: int) -> list[tuple[float, float]]:
    front = HttpFront(make_app(total, as_bytes), HttpLimits())
    port = front.listen("127.0.0.1", 0)
    await front.start()
    await fetch(port, total)  # warm-up
    out = []
    try:
        for _ in range(repeat):
            cpu, wall = time.process_time(), time.perf_counter()
            await fetch(port, total)
            out.append((time.perf_counter() - wall, time.process_time() - cpu))
    finally:
        await front.stop(1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = args.mib << 20
    for as_bytes in (False, True):
        runs = asyncio.run(measure(total, as_bytes, args.repeat))
        label = "bytes" if as_bytes else "memoryview"
        print(f"{args.mib} MiB as 1 MiB {label:10}: wall {statistics.median(r[0] for r in runs) * 1000:6.0f} ms, "
              f"CPU (server and client) {statistics.median(r[1] for r in runs) * 1000:6.0f} ms", flush=True)


if __name__ == "__main__":
    main()
