"""`python -m bridge.probe`: exit 0 when the bridge on this host answers /readyz with 200, 1 otherwise.

The containers' health check. The port is BRIDGE_LISTEN's; with BRIDGE_TLS_CERT set the bridge speaks
HTTPS, and the probe does too, without checking the certificate (it dials 127.0.0.1, which the viewers'
certificate does not name). One command for both, so a compose override that turns TLS on needs no health
check of its own (podman-compose joins the `test` lists of two files instead of replacing one).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def readyz_url(environ=os.environ) -> str:
    port = environ.get("BRIDGE_LISTEN", "127.0.0.1:8900").rsplit(":", 1)[1]
    return f"{'https' if environ.get('BRIDGE_TLS_CERT') else 'http'}://127.0.0.1:{port}/readyz"


def main() -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(readyz_url(), timeout=2, context=context) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as error:  # refused, timed out, or 503 (HTTPError)
        print(f"bridge.probe: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
