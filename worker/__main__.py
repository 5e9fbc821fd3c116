"""`python -m worker --model MODEL --listen HOST:PORT [--metrics-listen HOST:PORT]`."""

import sys

from contract.logs import configure_logging
from contract.malloc import keep_large_buffers_in_the_heap


def main(argv=None) -> int:
    configure_logging()  # before anything else logs
    keep_large_buffers_in_the_heap()
    from worker.config import parse_config
    from worker.loading import ModelNotFound, load_model_object
    from worker.server import PortInUse, serve

    config = parse_config(argv)
    try:
        return serve(config, load_model_object(config.model))
    except (ModelNotFound, PortInUse) as error:
        print(f"worker: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
