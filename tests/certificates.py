"""Certificates made by the tests themselves (trustme): a private CA, server and client certificates, as
PEM files the services read, and a second CA whose certificates our services must refuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

# What the servers' certificates name: the loopback address the tests dial, and the service names
# docker-compose.yml and the Kubernetes manifests give the worker and the bridge.
SERVER_NAMES = ("127.0.0.1", "localhost", "worker", "bridge")


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Pair
    client: Pair
    stranger: Pair  # a client certificate from another CA


def _write(cert: trustme.LeafCert, folder: Path, name: str) -> Pair:
    pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
    cert.cert_chain_pems[0].write_to_path(pair.cert)
    cert.private_key_pem.write_to_path(pair.key)
    return pair


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.crt")
    return Pki(
        ca=folder / "ca.crt",
        server=_write(ca.issue_cert(*SERVER_NAMES), folder, "server"),
        client=_write(ca.issue_cert("bridge-client"), folder, "client"),
        stranger=_write(other_ca.issue_cert("bridge-client"), folder, "stranger"),
    )
