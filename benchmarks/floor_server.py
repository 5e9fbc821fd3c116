"""The floor: the same request and answer bytes moved over a plain loopback socket, nothing else.

Reads each request's headers and Content-Length bytes of body (discarded), then sends a recorded answer
with sendfile. No parsing, no hashing, no model: what no HTTP service on this machine can beat.

    python -m benchmarks.floor_server --answer FILE --listen 127.0.0.1:0   # prints "listening on PORT"
"""

from __future__ import annotations

import argparse
import os
import socket
import threading


def serve_connection(conn: socket.socket, answer_path: str) -> None:
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    pending = b""
    size = os.path.getsize(answer_path)
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: multipart/related; boundary=floor\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    with conn, open(answer_path, "rb") as answer:
        while True:
            while b"\r\n\r\n" not in pending:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
            headers, _, rest = pending.partition(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            remaining = length - len(rest)
            pending = rest[length:] if remaining < 0 else b""
            while remaining > 0:
                received = conn.recv_into(view, min(remaining, len(buffer)))
                if not received:
                    return
                remaining -= received
            conn.sendall(head)
            answer.seek(0)
            conn.sendfile(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--answer", required=True, help="the answer body to send for every request")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = socket.create_server((host, int(port)), backlog=128)
    print(f"listening on {server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_connection, args=(conn, args.answer), daemon=True).start()


if __name__ == "__main__":
    main()
