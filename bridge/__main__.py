"""`python -m bridge --worker TARGET --listen HOST:PORT`."""

import sys

from service_runtime.logs import configure_logging
from service_runtime.malloc import keep_large_buffers_in_the_heap


def main(argv=None) -> int:
    configure_logging(native_output=True)  # before anything else logs; gRPC's own lines too
    keep_large_buffers_in_the_heap()
    from bridge.config import parse_config
    from bridge.server import PortInUse, serve

    try:
        return serve(parse_config(argv))
    except PortInUse as error:
        print(f"bridge: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
