"""`python -m worker --model MODEL --listen HOST:PORT [--metrics-listen HOST:PORT]` (and `arterys-worker`)."""

import sys

from contract.logs import configure_logging
from contract.malloc import keep_large_buffers_in_the_heap


def main(argv=None) -> int:
    configure_logging()  # before anything else logs
    keep_large_buffers_in_the_heap()
    from worker.config import parse_config
    from worker.loading import ModelNotFound, load_model_object
    from worker.ports import ensure_free
    from worker.server import PortInUse, serve

    config = parse_config(argv)
    try:
        ensure_free(config.listen)  # before the model's import, which may take long
        if config.metrics_listen:
            ensure_free(config.metrics_listen, "serve metrics on")
        if config.reload:
            from worker.reload import supervise

            return supervise(config, list(sys.argv[1:] if argv is None else argv))
        return serve(config, load_model_object(config.model, config.model_dir))
    except (ModelNotFound, PortInUse) as error:
        print(f"worker: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
