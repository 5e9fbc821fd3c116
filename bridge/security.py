"""The bridge's security settings: bearer tokens (bridge/auth.py), HTTPS, and TLS / mutual TLS to the workers.

Every setting is off by default, so a bridge started without them behaves as before. They are a branch of
the bridge's settings tree (bridge/config.py), a group of flags of their own; `checked` reads the files at
once (a missing certificate or token file stops the bridge with a usage error, not at its first request).
Tokens are read from BRIDGE_TOKENS only, never from a flag, which `ps` would show to every local user.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import ssl
from dataclasses import dataclass, field

import grpc

from bridge.auth import Authenticator, TokenStore, parse_tokens
from service_runtime import tls
from service_runtime.settings import setting


@dataclass(frozen=True)
class BridgeSecurity:
    GROUP = "security (docs/security.md)"

    tokens: tuple[str, ...] = field(default=(), repr=False)  # from BRIDGE_TOKENS; never printed
    token_file: str = setting("", "file of bearer tokens (one or more a line, # comments), re-read when it changes "
                                  "and on SIGHUP; tokens may also be given in [BRIDGE_TOKENS] (comma or space "
                                  "separated). Any token configured turns authentication on")
    tls_cert: str = setting("", "PEM certificate chain: serve HTTPS instead of HTTP (with --tls-key)")
    tls_key: str = setting("", "PEM private key of --tls-cert")
    worker_ca: str = setting("", "PEM CA certificate(s) the workers' certificates are checked against: TLS to "
                                 "workers")
    worker_cert: str = setting("", "PEM client certificate presented to the workers (mutual TLS, with "
                                   "--worker-key)")
    worker_key: str = setting("", "PEM private key of --worker-cert")
    worker_server_name: str = setting("", "name the workers' certificates must carry, when it is not the target's "
                                          "host name")
    metrics_auth: bool = setting(True, "with tokens configured, whether /metrics needs one too (Prometheus then "
                                       "sends it: authorization.credentials_file)", choices=("on", "off"),
                                 parse=str, shown=lambda on: "on" if on else "off", to_value=lambda text: text == "on")

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


def checked(parser: argparse.ArgumentParser, security: BridgeSecurity) -> BridgeSecurity:
    """`security` with BRIDGE_TOKENS' tokens, every file it names read now: a typo stops the bridge here, with
    its flag named."""
    security = dataclasses.replace(security, tokens=tuple(parse_tokens(os.environ.get("BRIDGE_TOKENS", ""))))
    try:
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
