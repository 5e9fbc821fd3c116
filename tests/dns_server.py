"""A DNS server for tests, on a loopback UDP port: answers A queries for one name with a list of addresses
the test changes while it runs (a headless Service gaining a pod, a compose service gaining a replica).

Every other question gets an empty NOERROR answer, so a resolver asking for AAAA, SRV or TXT records moves
on at once. The bridge reaches it through its target's authority: `dns://127.0.0.1:PORT/NAME:PORT`.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import contextmanager

TYPE_A, CLASS_IN = 1, 1


def _question_end(packet: bytes) -> int:
    """Offset just past the first question's QTYPE and QCLASS (names in queries are never compressed)."""
    position = 12
    while packet[position]:
        position += packet[position] + 1
    return position + 5


def _qname(packet: bytes) -> str:
    labels, position = [], 12
    while packet[position]:
        length = packet[position]
        labels.append(packet[position + 1: position + 1 + length].decode("ascii").lower())
        position += length + 1
    return ".".join(labels)


def answer(query: bytes, name: str, addresses: list[str], ttl: int = 0) -> bytes:
    ident, _flags, questions = struct.unpack("!HHH", query[:6])
    end = _question_end(query)
    (qtype, _qclass) = struct.unpack("!HH", query[end - 4: end])
    records = b""
    count = 0
    if questions == 1 and qtype == TYPE_A and _qname(query) == name.lower():
        for address in addresses:
            # A pointer to the question's name (offset 12), then TYPE, CLASS, TTL, RDLENGTH and the address.
            records += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + socket.inet_aton(address)
            count += 1
    # Response, authoritative, recursion available; one question, `count` answers.
    header = struct.pack("!HHHHHH", ident, 0x8580, 1, count, 0, 0)
    return header + query[12:end] + records


class DnsServer:
    def __init__(self, name: str, addresses: list[str]) -> None:
        self.name, self.addresses = name, list(addresses)
        self.queries = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                query, client = self._socket.recvfrom(512)
            except TimeoutError:
                continue
            self.queries += 1
            try:
                self._socket.sendto(answer(query, self.name, self.addresses), client)
            except (IndexError, struct.error):  # not a query we can read: no answer, as a real server might
                continue

    def target(self, port: int) -> str:
        return f"dns://127.0.0.1:{self.port}/{self.name}:{port}"

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()


@contextmanager
def dns_server(name: str, addresses: list[str]):
    server = DnsServer(name, addresses).start()
    try:
        yield server
    finally:
        server.stop()
