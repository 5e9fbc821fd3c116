"""`make run`: one worker with the mock model and the bridge, as two processes; Ctrl-C stops both.

Each service runs exactly as in production (`python -m worker`, `python -m bridge`), so what works here
works in the containers. Extra worker flags come from WORKER_* variables (e.g. WORKER_MODEL).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", default="127.0.0.1:8900", help="bridge HTTP address")
    parser.add_argument("--worker", default="127.0.0.1:50051", help="worker gRPC address")
    parser.add_argument("--metrics", default="127.0.0.1:9464", help="worker metrics address")
    parser.add_argument("--model", default=os.environ.get("WORKER_MODEL", "mock_model"))
    args = parser.parse_args()

    python = sys.executable
    worker = subprocess.Popen([python, "-m", "worker", "--model", args.model, "--listen", args.worker,
                               "--metrics-listen", args.metrics])
    bridge = subprocess.Popen([python, "-m", "bridge", "--worker", args.worker, "--listen", args.http])
    children = [worker, bridge]
    print(f"bridge on http://{args.http} (curl http://{args.http}/healthcheck), worker on {args.worker}, "
          f"worker metrics on http://{args.metrics}/metrics; Ctrl-C stops both", flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=35)
        except subprocess.TimeoutExpired:
            child.kill()
    codes = [child.returncode for child in children]
    return 0 if stopping else max(abs(c or 0) for c in codes) or 1


if __name__ == "__main__":
    sys.exit(main())
