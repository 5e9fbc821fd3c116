"""`make certs` (`python -m tools.make_certs [FOLDER] [--name HOST ...]`): the files deploy/compose/tls.yml
mounts, for a trial: a private CA, the workers' and the bridge's certificates, and one bearer token.

Not for production: there the viewers' certificate (bridge-https.crt) comes from your hospital's CA and
the keys from your own process (docs/security.md). Existing files are never overwritten; remove them to
make new ones. Run as root, the keys go to the containers' user (10001) with mode 0600; otherwise they are
made readable by everyone (0644), since that user must read them through the bind mount.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = ROOT / "deploy/compose/secrets"
CONTAINER_USER = 10001  # the images' numeric user (docker/*.Dockerfile)
# The names the bridge dials (`worker`, the compose service and Kubernetes' headless Service) and the ones
# the health checks dial inside each container.
WORKER_NAMES = ("worker", "localhost", "127.0.0.1")
FILES = ("ca.crt", "worker.crt", "worker.key", "bridge-client.crt", "bridge-client.key", "bridge-https.crt",
         "bridge-https.key", "bridge-tokens")


def make(folder: Path, viewer_names: list[str]) -> dict[str, Path]:
    """Writes FILES into `folder`; returns their paths. Refuses (FileExistsError) to overwrite any."""
    paths = {name: folder / name for name in FILES}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing:
        raise FileExistsError(f"already there (remove them to make new ones): {', '.join(existing)}")
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="arterys-grpc-bridge trial")
    ca.cert_pem.write_to_path(paths["ca.crt"])
    # trustme's leaf certificates carry serverAuth and clientAuth: the worker's probe presents worker.crt.
    for stem, cert in (("worker", ca.issue_cert(*WORKER_NAMES)), ("bridge-client", ca.issue_cert("bridge")),
                       ("bridge-https", ca.issue_cert(*viewer_names))):
        cert.cert_chain_pems[0].write_to_path(paths[f"{stem}.crt"])
        cert.private_key_pem.write_to_path(paths[f"{stem}.key"])
    paths["bridge-tokens"].write_text(f"# bearer tokens, one or more a line; edits apply without a restart\n"
                                      f"{secrets.token_hex(32)}\n")
    for name, path in paths.items():
        secret = name.endswith(".key") or name == "bridge-tokens"
        if os.geteuid() == 0:
            os.chown(path, CONTAINER_USER, CONTAINER_USER)
            path.chmod(0o600 if secret else 0o644)
        else:
            path.chmod(0o644)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.make_certs", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER,
                        help="where to write them (default deploy/compose/secrets, which git ignores)")
    parser.add_argument("--name", action="append", default=[],
                        help="a host name or address viewers use for the bridge (repeatable; localhost and "
                             "127.0.0.1 are always included)")
    args = parser.parse_args(argv)
    try:
        paths = make(args.folder, ["localhost", "127.0.0.1", *args.name])
    except FileExistsError as error:
        print(f"make_certs: {error}", file=sys.stderr)
        return 1
    print(f"made {', '.join(paths)} in {args.folder}")
    print(f"the bearer token is in {paths['bridge-tokens']}; viewers trust {paths['ca.crt']} for HTTPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
