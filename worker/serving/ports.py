"""Says that a listen address is taken before gRPC tries it: one line of ours instead of gRPC's C-core log.

gRPC reports a failed bind by logging an `E... add_port.cc` line to stderr itself and then failing
(worker/serving/server.py turns that into PortInUse); checking first keeps the message to the one line the
worker prints, and fails before a slow model import. The check binds the way gRPC does (SO_REUSEADDR, no
SO_REUSEPORT), so a port that is only in TIME_WAIT after a restart counts as free, as it is for gRPC.
Between this check and gRPC's bind another process could still take the port: gRPC's own failure then
still ends in PortInUse.
"""

from __future__ import annotations

import errno
import socket

from worker.serving.server import PortInUse


def ensure_free(address: str, what: str = "listen on") -> None:
    """Raises PortInUse when something already listens on HOST:PORT (port 0 and non-TCP targets pass)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) == 0 or host.startswith(("unix", "vsock")):
        return
    host = host.strip("[]") or None
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # gRPC says what is wrong with the host
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise PortInUse(f"cannot {what} {address}: Address already in use") from None
