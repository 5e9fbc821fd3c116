"""`make run`: one worker with the mock model and the bridge, as two processes; Ctrl-C stops both.

Each service runs exactly as in production (`python -m worker`, `python -m bridge`), so what works here
works in the containers. The addresses and the model default to the services' own variables
(BRIDGE_LISTEN, WORKER_LISTEN, WORKER_METRICS_LISTEN, WORKER_MODEL); every other WORKER_* and BRIDGE_*
variable reaches the services unchanged (e.g. WORKER_RELOAD=1). The "up" line is printed only once the
bridge answers: when a service cannot start (a port in use), its one line is the last word and the
exit status is not zero.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

START_TIMEOUT = 60.0


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m tools.run_local", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--http", default=env("BRIDGE_LISTEN", "127.0.0.1:8900"),
                        help="bridge HTTP address [BRIDGE_LISTEN]")
    parser.add_argument("--worker", default=env("WORKER_LISTEN", "127.0.0.1:50051"),
                        help="worker gRPC address [WORKER_LISTEN]")
    parser.add_argument("--metrics", default=env("WORKER_METRICS_LISTEN", "127.0.0.1:9464"),
                        help="worker metrics address [WORKER_METRICS_LISTEN]")
    parser.add_argument("--model", default=env("WORKER_MODEL", "mock_model"),
                        help="the worker's --model [WORKER_MODEL]")
    return parser


def bridge_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host in ("[::]", "::") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def main() -> int:
    args = build_parser().parse_args()
    if bridge_answers(args.http):
        # Something (another `make run`?) already serves there; our bridge would fail to bind a moment after
        # that one's answer had been taken for its own.
        print(f"make run: something already answers on http://{args.http} (another make run?); stop it or set "
              "BRIDGE_LISTEN to another address", file=sys.stderr)
        return 2

    python = sys.executable
    worker = subprocess.Popen([python, "-m", "worker", "--model", args.model, "--listen", args.worker,
                               "--metrics-listen", args.metrics])
    bridge = subprocess.Popen([python, "-m", "bridge", "--worker", args.worker, "--listen", args.http])
    children = [worker, bridge]

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    announced = False
    deadline = time.monotonic() + START_TIMEOUT
    while not stopping and all(child.poll() is None for child in children):
        if not announced and time.monotonic() < deadline and bridge_answers(args.http):
            announced = True
            print(f"bridge on http://{args.http} (curl http://{args.http}/healthcheck), worker on {args.worker} "
                  f"(model {args.model}), worker metrics on http://{args.metrics}/metrics; Ctrl-C stops both",
                  flush=True)
        time.sleep(0.2)
    ended = [name for name, child in zip(("worker", "bridge"), children, strict=True) if child.poll() is not None]
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=35)
        except subprocess.TimeoutExpired:
            child.kill()
    if stopping:
        return 0
    # The status of the service that stopped by itself (the other one was stopped by us).
    codes = [abs(child.returncode or 0) for name, child in zip(("worker", "bridge"), children, strict=True)
             if name in ended]
    print(f"make run: the {' and the '.join(ended)} stopped (its message is above), so both are stopped",
          file=sys.stderr)
    return max(codes) or 1


if __name__ == "__main__":
    sys.exit(main())
