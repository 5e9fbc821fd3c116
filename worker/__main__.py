"""`python -m worker --model MODEL --listen HOST:PORT [--metrics-listen HOST:PORT]` (and `arterys-worker`)."""

import os
import sys

from service_runtime.logs import configure_logging
from service_runtime.malloc import keep_large_buffers_in_the_heap
from service_runtime.native_log import add_watch
from worker.serving.handshakes import HandshakeWatch, enable_trace, uses_tls


def main(argv=None) -> int:
    if argv is None and uses_tls(sys.argv[1:]) and enable_trace():
        # gRPC read GRPC_TRACE when the worker package imported it: start again with the trace on, which
        # names the peer of a failed TLS handshake (worker/serving/handshakes.py). Once: the variable is set now.
        os.execv(sys.executable, sys.orig_argv)
    keep_large_buffers_in_the_heap()  # before any thread starts (the native log's reader is one)
    configure_logging(native_output=True)  # before anything else logs
    add_watch(HandshakeWatch())
    from worker.serving.config import parse_config
    from worker.serving.loading import ModelNotFound, load_model_object
    from worker.serving.ports import ensure_free
    from worker.serving.server import PortInUse, serve

    config = parse_config(argv)
    try:
        ensure_free(config.listen)  # before the model's import, which may take long
        if config.metrics_listen:
            ensure_free(config.metrics_listen, "serve metrics on")
        if config.reload:
            from worker.serving.reload import supervise

            return supervise(config, list(sys.argv[1:] if argv is None else argv))
        return serve(config, load_model_object(config.model, config.model_dir))
    except (ModelNotFound, PortInUse) as error:
        print(f"worker: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
