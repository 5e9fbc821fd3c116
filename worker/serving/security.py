"""The worker's security settings: TLS or mutual TLS on its gRPC port, reflection, HTTPS for /metrics.

Off by default (plaintext, reflection on), as before. With --tls-cert/--tls-key the port speaks TLS only:
a plaintext client fails its handshake and never reaches a service. With --tls-client-ca as well, every
client (the bridge, the probe) must present a certificate that CA signed, so reaching the port is no
longer enough to run a model. Reflection lists the services and their message types to anyone who can
call the port: --no-reflection (WORKER_REFLECTION=0) removes it.

/metrics is prometheus_client's own HTTP server, which takes a certificate and a client CA: with
--metrics-tls it serves HTTPS with the gRPC port's certificate, and requires a client certificate from
--tls-client-ca when that is set. Otherwise bind it to a private address (docs/security.md).
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass

import grpc

from service_runtime import tls
from service_runtime.settings import setting


@dataclass(frozen=True)
class WorkerSecurity:
    GROUP = "security (docs/security.md)"

    tls_cert: str = setting("", "PEM certificate chain: the gRPC port speaks TLS only (with --tls-key)")
    tls_key: str = setting("", "PEM private key of --tls-cert")
    tls_client_ca: str = setting("", "PEM CA certificate(s): mutual TLS, every client must present a certificate "
                                     "signed by one")
    reflection: bool = setting(True, "do not offer gRPC server reflection (WORKER_REFLECTION=0 does the same)",
                               flag="--no-reflection", env="WORKER_REFLECTION", switch="off")
    # A plaintext port on a non-loopback address is intended: no warning.
    allow_plaintext: bool = setting(False, "a plaintext gRPC port on a non-loopback address is intended (a private "
                                           "network): no warning at start", switch="on")
    metrics_tls: bool = setting(False, "serve /metrics over HTTPS with --tls-cert/--tls-key, requiring a client "
                                       "certificate when --tls-client-ca is set", switch="on")

    def plaintext_warning(self, listen: str) -> str | None:
        """What to warn about at start when `listen` is reachable from other hosts without TLS, else None."""
        if self.tls_cert or self.allow_plaintext or is_loopback(listen):
            return None
        return (f"the worker listens on {listen} without TLS: anyone who can reach this port can run the model "
                "and read its answers. Use --tls-cert/--tls-key with --tls-client-ca (docs/security.md), or say "
                "that a private network is intended with --allow-plaintext (WORKER_ALLOW_PLAINTEXT=1)")

    def server_credentials(self) -> grpc.ServerCredentials | None:
        tls.require_pair(self.tls_cert, self.tls_key, "--tls-cert", "--tls-key")
        if self.tls_client_ca and not self.tls_cert:
            raise tls.TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
        if self.metrics_tls and not self.tls_cert:
            raise tls.TlsConfigError("--metrics-tls serves /metrics with --tls-cert and --tls-key: give them")
        return tls.server_credentials(self.tls_cert, self.tls_key, self.tls_client_ca) if self.tls_cert else None

    def metrics_server_kwargs(self) -> dict:
        """Keyword arguments of prometheus_client.start_http_server."""
        if not self.metrics_tls:
            return {}
        return {"certfile": self.tls_cert, "keyfile": self.tls_key, "client_cafile": self.tls_client_ca or None,
                "client_auth_required": bool(self.tls_client_ca)}


def check(parser: argparse.ArgumentParser, security: WorkerSecurity) -> None:
    """A certificate or key that cannot be used is a usage error at start."""
    try:
        security.server_credentials()
    except tls.TlsConfigError as error:
        parser.error(str(error))


def is_loopback(listen: str) -> bool:
    """Whether a gRPC listen address (HOST:PORT, [V6]:PORT, unix:PATH) is reachable from this host only."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rpartition(":")[0].strip("[]") if ":" in listen else listen
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: another host may resolve it to us
