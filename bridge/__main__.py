"""`python -m bridge --worker TARGET --listen HOST:PORT`."""

import sys

from contract.logs import configure_logging


def main(argv=None) -> int:
    configure_logging()  # before anything else logs
    from bridge.config import parse_config
    from bridge.server import PortInUse, serve

    try:
        return serve(parse_config(argv))
    except PortInUse as error:
        print(f"bridge: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
