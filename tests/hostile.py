"""Hostile clients of the second adversarial pass (issue 18), as context managers the tests and
benchmarks/attacks.py share: a crowd of slow uploads through the bridge, a crowd of trickling gRPC streams
straight to the worker, one stream of one-byte chunks, a flood of failed TLS handshakes; and against the
bridge's HTTP front: floods of TLS connections that never finish, pipelined requests never read, a body in
one-byte HTTP chunks, aborted uploads. Each runs in the
background while its block lasts, and ends (sockets closed, calls cancelled) when the block does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from contract import inference_pb2 as pb
from contract import wire
from service_runtime.grpc_aio import StreamCall

FOUR_GIB = 4 << 30
# Bytes an uploader sends each time: above 64 KiB/s in every 20 s window of the bridge's minimum rate (the
# issue's 1.3 MB every 19 s falls short in a window that holds one burst: 1,300,000 < 65,536 x 20, cut at 40 s).
SLOW_PIECE = 1_400_000
SLOW_EVERY = 19.0


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def source_address(index: int) -> str:
    """A loopback address of its own per client (127.0.1.1, 127.0.1.2, ...): a crowd, not one client."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def endless_upload_head(boundary: str = "b") -> bytes:
    """A POST that declares 4 GiB of body, its JSON part, and the start of a DICOM part that never ends."""
    return (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; boundary={boundary}\r\n"
            f"Content-Length: {FOUR_GIB}\r\n\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()


@contextlib.contextmanager
def in_background(work: Callable[[threading.Event], None], on_stop: Callable[[], None] = lambda: None):
    """Runs `work(stop)` on a thread of its own while the block runs; at its end sets `stop`, calls `on_stop`
    and waits for the thread."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        on_stop()
        thread.join(30)


@contextlib.contextmanager
def slow_uploads(port: int, count: int = 130, piece: int = SLOW_PIECE, every: float = SLOW_EVERY) -> Iterator[str]:
    """`count` clients, each from its own address, declaring 4 GiB and sending `piece` bytes every `every`
    seconds: just above the bridge's minimum rate, so each lasts for hours."""
    socks = [connect(port, source_address(index)) for index in range(count)]
    data = b"\0" * piece

    def send_all() -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(data)

    for sock in socks:
        sock.sendall(endless_upload_head())
    send_all()

    def trickle(stop: threading.Event) -> None:
        while not stop.wait(every):
            send_all()

    try:
        with in_background(trickle):
            yield f"{count} uploads declaring 4 GiB, {piece / 1e6:.1f} MB every {every:g} s"
    finally:
        for sock in socks:
            sock.close()


class _LoopThread:
    """An asyncio loop on a thread of its own, for clients that keep many gRPC calls open at once."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _header_and_part() -> list[bytes]:
    return [pb.InferRequest(header=pb.RequestHeader(request_json=b"{}", request_id="attack")).SerializeToString(),
            pb.InferRequest(part=pb.PartHeader(kind=pb.PART_KIND_DICOM,
                                               content_type="application/dicom")).SerializeToString()]


@contextlib.contextmanager
def trickling_streams(address: str, count: int = 130, every: float = 20.0) -> Iterator[dict]:
    """`count` gRPC streams straight to the worker: a header, one part, then one byte every `every` seconds.
    Yields a dict whose "ended" entry lists how each call ended (status code names), once it has."""
    runner = _LoopThread()
    outcome: dict = {"ended": [], "description": f"{count} gRPC streams sending 1 byte every {every:g} s"}
    stop = asyncio.Event()
    byte = wire.request_chunk((b"x",))

    async def one(channel) -> None:
        # Through StreamCall: a write in flight when the worker ends the call would otherwise put gRPC's INTERNAL
        # over the worker's status (grpc/grpc#36066; service_runtime/grpc_aio.py).
        call = StreamCall(channel.stream_stream(wire.INFER_METHOD, request_serializer=wire.serialize_request,
                                                response_deserializer=wire.parse_response)(timeout=7200))
        try:
            for message in _header_and_part():
                await call.write(message)
            while True:
                await call.write(byte)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        await stop.wait()
                if stop.is_set():
                    break
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass
        finally:
            call.cancel()
            outcome["ended"].append((await call.code()).name)

    async def start():
        channel = grpc.aio.insecure_channel(address)
        tasks = [asyncio.ensure_future(one(channel)) for _ in range(count)]
        return channel, tasks

    channel, tasks = runner.run(start())
    try:
        yield outcome
    finally:
        async def finish():
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await channel.close()
            await asyncio.sleep(0.1)  # gRPC's own tasks of the cancelled calls finish

        runner.run(finish(), timeout=60)
        runner.close()


@contextlib.contextmanager
def one_byte_chunks(address: str, count: int = 400_000) -> Iterator[dict]:
    """One stream to the worker: a header, one part, then `count` chunk messages of one byte each, sent while
    the block runs. The dict yielded has "done" (an Event: all sent, or the worker ended the call) and
    "error" (how the call failed, if it did); the call is cancelled when the block ends."""
    channel = grpc.insecure_channel(address)
    infer = channel.stream_stream(wire.INFER_METHOD, request_serializer=wire.serialize_request,
                                  response_deserializer=wire.parse_response)
    done, release = threading.Event(), threading.Event()
    outcome: dict = {"error": None, "done": done, "description": f"{count:,} one-byte chunk messages on one stream"}

    def messages():
        yield from _header_and_part()
        byte = wire.request_chunk((b"x",))
        for _ in range(count):
            yield byte
        done.set()
        release.wait(900)

    call = infer(messages(), timeout=900)

    def wait_for_the_end(stop: threading.Event) -> None:
        try:
            list(call)
        except grpc.RpcError as error:
            if not stop.is_set():
                outcome["error"] = error
        done.set()

    def cancel() -> None:
        release.set()
        call.cancel()

    try:
        with in_background(wait_for_the_end, cancel):
            yield outcome
    finally:
        channel.close()


def handshake_flood(port: int, count: int) -> None:
    """`count` connections to a TLS port that send an HTTP request instead of a ClientHello."""
    for _ in range(count):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                sock.recv(1024)


# ------------------------------------------------------------------ against the bridge's HTTP front


def half_client_hello(server_hostname: str = "localhost") -> bytes:
    """The first half of a real TLS ClientHello: a handshake that never completes."""
    import ssl

    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    with contextlib.suppress(ssl.SSLWantReadError):
        ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_hostname).do_handshake()
    hello = outgoing.read()
    return hello[: len(hello) // 2]


def tls_connection_flood(port: int, count: int = 3000) -> None:
    """`count` connections to a TLS port at once, every other one sending half a ClientHello, then all closed."""
    hello, sockets = half_client_hello(), []
    for index in range(count):
        with contextlib.suppress(OSError):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if index % 2:
                sock.sendall(hello)
            sockets.append(sock)
    for sock in sockets:
        sock.close()


@contextlib.contextmanager
def pipelined_flood(port: int, request: bytes, size: int, seconds: float = 20.0) -> Iterator[dict]:
    """Sends up to `size` bytes of `request` pipelined, never reading an answer, for at most `seconds`; the
    connection stays open while the block runs. Yields {"sent": bytes the bridge took}."""
    outcome = {"sent": 0}
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    batch = request * max(1, 65536 // len(request))
    deadline = time.monotonic() + seconds
    try:
        while outcome["sent"] < size and time.monotonic() < deadline:
            try:
                outcome["sent"] += sock.send(batch)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break  # the bridge closed it (a 429, say): nothing more to send
        yield outcome
    finally:
        sock.close()


def one_byte_chunk_upload(attachment_bytes: int = 1_000_000) -> bytes:
    """A whole chunked POST whose body (the request JSON and one attachment) travels one byte per chunk."""
    payload = (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: application/octet-stream"
               b"\r\n\r\n" + b"x" * attachment_bytes + b"\r\n--b--\r\n")
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    return head + b"".join(b"1\r\n%b\r\n" % payload[i:i + 1] for i in range(len(payload))) + b"0\r\n\r\n"


def send_and_read(port: int, data: bytes, timeout: float = 60) -> bytes:
    """Sends `data` (stopping early if the bridge closes), then reads until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def aborted_uploads(port: int, count: int, declared: int = 30 << 20, sent: int = 1_700_000) -> None:
    """`count` uploads that declare `declared` bytes, send about `sent`, and hang up (a reset, not a close),
    from 200 addresses in turn: a crowd, so that the per-address limit on bodies arriving (a 429 before any
    body is read) is not what they meet."""
    body_start = (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: application/dicom"
                  b"\r\n\r\n" + b"\0" * sent)
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/related; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % declared)
    for index in range(count):
        with connect(port, source_address(index % 200)) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(head + body_start)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
