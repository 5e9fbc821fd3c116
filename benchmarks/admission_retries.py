"""How many worker calls one HTTP request costs when every worker is full, and what the clients get.

Two workers, each with one model slot and no queue (`--concurrency 1 --queue-size 0`), a model taking
MODEL_SECONDS per study, and more concurrent clients than places, each sending one small study after the
other for SECONDS through one bridge (default settings: `--queue-wait-seconds 10`). The workers log at DEBUG,
where every call they refuse and every study they receive is one line carrying the request's id: counted
per request id, these are the worker calls each request made.

    .venv/bin/python -m benchmarks.admission_retries [--clients 12] [--seconds 20] [--model-seconds 0.5]

Prints the HTTP outcomes and 200s per second (from the first request to the last answer), worker calls
per request (mean, largest), calls per worker per request (largest), refusals, the workers' log lines per
request, and request latency.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import start_bridge, start_worker

# A worker's DEBUG lines for one call: a refusal before admission, or the study of an admitted call received.
CALL_LINE = re.compile(r"request_id=(\S+) .*\] (inference failed \(RESOURCE_EXHAUSTED\)|received \d+ instance)")
TAGGED_LINE = re.compile(r"request_id=([0-9a-f]{16})\b")


def run(clients: int, seconds: float, model_seconds: float, extra_bridge: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        study = [i.path for i in write_study(tmp / "study", [SeriesSpec("s", rows=32, cols=32, count=1)]).instances]
        env = {"MOCK_INFER_SECONDS": str(model_seconds), "LOG_LEVEL": "DEBUG"}
        workers = [start_worker(tmp, "mock_model.faults:SlowModel", "--concurrency", "1", "--queue-size", "0",
                                env=env) for _ in range(2)]
        bridge = start_bridge(tmp, f"ipv4:{workers[0].address},{workers[1].address}", *extra_bridge)
        time.sleep(3)  # the bridge counts its ready workers every 2 s
        outcomes: list[tuple[str, int, float]] = []
        started_at = time.monotonic()
        stop_at = started_at + seconds

        def client() -> None:
            while time.monotonic() < stop_at:
                request_id = uuid.uuid4().hex[:16]
                started = time.monotonic()
                response = http.post_like_original_tool(f"http://{bridge.address}/", {}, study, timeout=120,
                                                        headers={"X-Request-Id": request_id})
                outcomes.append((request_id, response.status_code, time.monotonic() - started))

        threads = [threading.Thread(target=client) for _ in range(clients)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started_at
        finally:
            bridge.stop()
            for worker in workers:
                worker.stop()
        calls: collections.Counter = collections.Counter()  # request id -> worker calls
        per_worker: collections.Counter = collections.Counter()  # (worker, request id) -> calls
        lines: collections.Counter = collections.Counter()  # request id -> worker log lines
        refusals = 0
        for index, worker in enumerate(workers):
            for line in worker.log().splitlines():
                if tagged := TAGGED_LINE.search(line):
                    lines[tagged[1]] += 1
                if found := CALL_LINE.search(line):
                    calls[found[1]] += 1
                    per_worker[index, found[1]] += 1
                    refusals += found[2].startswith("inference failed")
        ids = [request_id for request_id, _, _ in outcomes]
        answered = sum(code == 200 for _, code, _ in outcomes)
        return {
            "requests": len(outcomes),
            "answered_per_second": answered / elapsed,
            "model_busy": answered * model_seconds / (2 * elapsed),
            "status": dict(collections.Counter(code for _, code, _ in outcomes)),
            "calls_mean": statistics.mean(calls[i] for i in ids),
            "calls_max": max(calls[i] for i in ids),
            "calls_per_worker_max": max(per_worker.values()),
            "refusals": refusals,
            "log_lines_mean": statistics.mean(lines[i] for i in ids),
            "log_lines_max": max(lines[i] for i in ids),
            "latency_median": statistics.median(seconds for _, _, seconds in outcomes),
            "latency_max": max(seconds for _, _, seconds in outcomes),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--model-seconds", type=float, default=0.5)
    parser.add_argument("--bridge-arg", action="append", default=[], help="an extra bridge flag (repeatable)")
    args = parser.parse_args()
    result = run(args.clients, args.seconds, args.model_seconds, args.bridge_arg)
    print(f"{args.clients} clients, {args.seconds:g} s, model {args.model_seconds:g} s, 2 workers x 1 place, "
          f"bridge {' '.join(args.bridge_arg) or 'defaults'}")
    print(f"  requests {result['requests']}  HTTP {result['status']}  200s per second "
          f"{result['answered_per_second']:.2f} (the models busy {result['model_busy']:.0%} of the time)")
    print(f"  worker calls per request: mean {result['calls_mean']:.2f}, largest {result['calls_max']}; "
          f"one worker's calls for one request, largest {result['calls_per_worker_max']}; "
          f"refusals {result['refusals']}")
    print(f"  worker log lines per request (DEBUG): mean {result['log_lines_mean']:.1f}, "
          f"largest {result['log_lines_max']}")
    print(f"  latency: median {result['latency_median']:.2f} s, largest {result['latency_max']:.2f} s")


if __name__ == "__main__":
    main()
