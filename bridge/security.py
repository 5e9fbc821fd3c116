"""The bridge's security settings: bearer tokens (bridge/auth.py), HTTPS, and TLS / mutual TLS to the workers.

Every setting is off by default, so a bridge started without them behaves as before. Flags and their
BRIDGE_* variables are added to the bridge's parser by `add_flags`; `from_args` checks the files at once
(a missing certificate or token file stops the bridge with a usage error, not at its first request).
Tokens are read from BRIDGE_TOKENS only, never from a flag, which `ps` would show to every local user.
"""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass, field

import grpc

from bridge.auth import Authenticator, TokenStore, parse_tokens
from service_runtime import tls


@dataclass(frozen=True)
class BridgeSecurity:
    tokens: tuple[str, ...] = field(default=(), repr=False)  # never printed with the configuration
    token_file: str = ""
    metrics_auth: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    worker_ca: str = ""
    worker_cert: str = ""
    worker_key: str = ""
    worker_server_name: str = ""

    @property
    def auth_enabled(self) -> bool:
        return bool(self.tokens or self.token_file)

    @property
    def worker_tls(self) -> bool:
        return bool(self.worker_ca or self.worker_cert)

    def authenticator(self) -> Authenticator | None:
        if not self.auth_enabled:
            return None
        return Authenticator(TokenStore(self.tokens, self.token_file), protect_metrics=self.metrics_auth)

    def http_ssl_context(self) -> ssl.SSLContext | None:
        tls.require_pair(self.tls_cert, self.tls_key, "--tls-cert", "--tls-key")
        return tls.http_server_context(self.tls_cert, self.tls_key) if self.tls_cert else None

    def worker_credentials(self) -> grpc.ChannelCredentials | None:
        if not self.worker_tls:
            return None
        return tls.channel_credentials(self.worker_ca, self.worker_cert, self.worker_key)

    def worker_channel_options(self) -> list[tuple[str, str]]:
        return tls.server_name_options(self.worker_server_name) if self.worker_tls else []


# flag -> (field, help). Each is --FLAG and BRIDGE_FLAG (upper case, '-' -> '_').
_FILE_FLAGS = [
    ("token-file", "token_file",
     "file of bearer tokens (one or more a line, # comments), re-read when it changes and on SIGHUP; tokens may "
     "also be given in [BRIDGE_TOKENS] (comma or space separated). Any token configured turns authentication on"),
    ("tls-cert", "tls_cert", "PEM certificate chain: serve HTTPS instead of HTTP (with --tls-key)"),
    ("tls-key", "tls_key", "PEM private key of --tls-cert"),
    ("worker-ca", "worker_ca", "PEM CA certificate(s) the workers' certificates are checked against: TLS to workers"),
    ("worker-cert", "worker_cert", "PEM client certificate presented to the workers (mutual TLS, with --worker-key)"),
    ("worker-key", "worker_key", "PEM private key of --worker-cert"),
    ("worker-server-name", "worker_server_name",
     "name the workers' certificates must carry, when it is not the target's host name"),
]


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (docs/security.md)")
    for flag, name, text in _FILE_FLAGS:
        env_name = "BRIDGE_" + flag.upper().replace("-", "_")
        group.add_argument(f"--{flag}", dest=name, default=os.environ.get(env_name, ""), help=f"{text} [{env_name}]")
    group.add_argument("--metrics-auth", choices=("on", "off"), default=os.environ.get("BRIDGE_METRICS_AUTH", "on"),
                       help="with tokens configured, whether /metrics needs one too (Prometheus then sends it: "
                            "authorization.credentials_file) [BRIDGE_METRICS_AUTH]")


def from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> BridgeSecurity:
    security = BridgeSecurity(
        tokens=tuple(parse_tokens(os.environ.get("BRIDGE_TOKENS", ""))), token_file=args.token_file,
        metrics_auth=args.metrics_auth == "on", tls_cert=args.tls_cert, tls_key=args.tls_key,
        worker_ca=args.worker_ca, worker_cert=args.worker_cert, worker_key=args.worker_key,
        worker_server_name=args.worker_server_name,
    )
    try:  # every file read now: a typo stops the bridge here, with its flag named
        security.http_ssl_context()
        security.worker_credentials()
        if security.token_file:
            with open(security.token_file, "rb"):
                pass
    except tls.TlsConfigError as error:
        parser.error(str(error))
    except OSError as error:
        parser.error(f"--token-file {security.token_file}: {error.strerror or error}")
    return security
