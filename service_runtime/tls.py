"""TLS material for both hops, read from PEM files: gRPC credentials (bridge -> worker) and the bridge's HTTPS.

Both images import this module, and only the standard library and grpcio: no certificate is parsed here
beyond what OpenSSL (for HTTPS) and gRPC's BoringSSL do when the credentials are built, so a wrong path
or a key that does not match its certificate fails at start-up with a message naming the flag, not at
the first call.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the flag."""


def read_pem(path: str, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"{flag} {path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{flag} {path}: not a PEM file (no -----BEGIN line)")
    return data


def require_pair(cert: str, key: str, cert_flag: str, key_flag: str) -> None:
    if bool(cert) != bool(key):
        raise TlsConfigError(f"{cert_flag} and {key_flag} go together: give both or neither")


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """A gRPC server's credentials; with `client_ca`, every client must present a certificate it signed."""
    pair = (read_pem(key, "--tls-key"), read_pem(cert, "--tls-cert"))
    _check_pair(cert, key, "--tls-cert", "--tls-key")
    roots = read_pem(client_ca, "--tls-client-ca") if client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=roots is not None)


def channel_credentials(ca: str, cert: str = "", key: str = "", flags: tuple[str, str, str] = (
        "--worker-ca", "--worker-cert", "--worker-key")) -> grpc.ChannelCredentials:
    """A gRPC client's credentials: the servers' CA, and a client certificate for mutual TLS."""
    ca_flag, cert_flag, key_flag = flags
    require_pair(cert, key, cert_flag, key_flag)
    roots = read_pem(ca, ca_flag) if ca else None
    if not cert:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    _check_pair(cert, key, cert_flag, key_flag)
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=read_pem(key, key_flag),
                                        certificate_chain=read_pem(cert, cert_flag))


def server_name_options(server_name: str) -> list[tuple[str, str]]:
    """Checks the server's certificate against `server_name` instead of the target's host name (for a
    target such as an IP address or a name the certificate does not carry)."""
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []


def http_server_context(cert: str, key: str) -> ssl.SSLContext:
    """The bridge's HTTPS: TLS 1.2 or later, the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, "--tls-cert", "--tls-key")
    return context


def _check_pair(cert: str, key: str, cert_flag: str, key_flag: str) -> None:
    """gRPC only notices a key that does not match its certificate at the first handshake (and then logs it
    at every reconnection): OpenSSL checks now."""
    _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key, cert_flag, key_flag)


def _load_chain(context: ssl.SSLContext, cert: str, key: str, cert_flag: str, key_flag: str) -> None:
    read_pem(cert, cert_flag)
    read_pem(key, key_flag)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise TlsConfigError(f"{cert_flag} {cert} with {key_flag} {key}: {error.reason or error} (is the key "
                             "the certificate's, both PEM, the key unencrypted?)") from None
