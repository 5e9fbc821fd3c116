"""The load client of the benchmark: N concurrent keep-alive connections sending one request file.

Runs as its own process (so that its CPU is not the servers'), sends the request body with sendfile and
reads answers into a reused buffer, so that it costs as little CPU as a client can. Prints one JSON
object: latencies (s), status counts, bytes received, wall time.

    python -m benchmarks.loadgen '{"port": 8900, "body": "req.bin", "content_type": "...",
                                   "clients": 8, "requests": 800}'
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time

RECV_SIZE = 1 << 20


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.buffer = bytearray(RECV_SIZE)
        self.pending = b""

    async def connect(self, loop) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        await loop.sock_connect(self.sock, (self.host, self.port))
        self.pending = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _fill(self, loop) -> bool:
        data = await loop.sock_recv(self.sock, 65536)
        if not data:
            return False
        self.pending += data
        return True

    async def exchange(self, loop, head: bytes, body_path: str, save_to: str | None) -> tuple[int, int]:
        """Sends one request, reads its answer; returns (status, body bytes). Raises on a broken connection."""
        await loop.sock_sendall(self.sock, head)
        with open(body_path, "rb") as body:
            await loop.sock_sendfile(self.sock, body)
        while b"\r\n\r\n" not in self.pending:
            if not await self._fill(loop):
                raise ConnectionError("closed before the answer's headers")
        raw_headers, _, rest = self.pending.partition(b"\r\n\r\n")
        lines = raw_headers.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        close = headers.get(b"connection", b"").lower() == b"close"
        out = open(save_to, "wb") if save_to else None
        try:
            if b"content-length" in headers:
                length = int(headers[b"content-length"])
                taken = rest[:length]
                if out:
                    out.write(taken)
                self.pending = rest[length:]
                remaining = length - len(taken)
                view = memoryview(self.buffer)
                while remaining > 0:
                    received = await loop.sock_recv_into(self.sock, view[:min(remaining, RECV_SIZE)])
                    if not received:
                        raise ConnectionError(f"closed with {remaining} answer bytes missing")
                    if out:
                        out.write(view[:received])
                    remaining -= received
            else:  # no length: the answer ends with the connection
                length = len(rest)
                while data := await loop.sock_recv(self.sock, RECV_SIZE):
                    length += len(data)
                close = True
        finally:
            if out:
                out.close()
        if close:
            self.close()
        return status, length


async def run(config: dict) -> dict:
    loop = asyncio.get_running_loop()
    host, port = config.get("host", "127.0.0.1"), int(config["port"])
    body_path, total = config["body"], int(config["requests"])
    size = os.path.getsize(body_path)
    head = (f"POST {config.get('path', '/')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {config['content_type']}\r\nContent-Length: {size}\r\n\r\n").encode()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    received = 0
    issued = 0
    save_to = config.get("save_answer")

    async def client() -> None:
        nonlocal issued, received, save_to
        conn = Connection(host, port)
        try:
            while issued < total:
                issued += 1
                target, save_to = save_to, None
                started = time.perf_counter()
                try:
                    if conn.sock is None:
                        await conn.connect(loop)
                    status, length = await conn.exchange(loop, head, body_path, target)
                except OSError as error:
                    conn.close()
                    key = type(error).__name__
                    statuses[key] = statuses.get(key, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                received += length
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(int(config.get("clients", 1)))))
    return {"latencies": latencies, "statuses": statuses, "received": received,
            "wall": time.perf_counter() - started, "request_bytes": size}


def main() -> None:
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))


if __name__ == "__main__":
    main()
