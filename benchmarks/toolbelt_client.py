"""The second load client of the benchmark: the original inference-test-tool's way of talking HTTP.

A `requests` Session per client posts the bytes of a requests_toolbelt `MultipartEncoder` (the original
tool's fields, tests/http_helpers.py: made once by benchmarks/compare.py and read here into memory, as the
tool held `encoder.to_string()`), reads the answer whole with `r.content` and splits it with
`MultipartDecoder`. Clients are threads of this one process, each with its own Session (keep-alive), as a
script sending several requests at once would be.

Latency is from the call of `post()` to the answer's last byte (`post()` returns after `r.content`), the
lean client's definition (benchmarks/loadgen.py); the split with `MultipartDecoder` follows outside the
timed span, on the same thread, so its CPU competes with the servers' as a real client's does. Prints
the JSON object loadgen prints.

    python -m benchmarks.toolbelt_client '{"port": 8900, "body": "req.bin", "content_type": "...",
                                           "clients": 8, "requests": 800}'
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import requests
from requests_toolbelt.multipart.decoder import MultipartDecoder


def run(config: dict) -> dict:
    host, port = config.get("host", "127.0.0.1"), int(config["port"])
    url = f"http://{host}:{port}{config.get('path', '/')}"
    body = Path(config["body"]).read_bytes()
    headers = {"Content-Type": config["content_type"]}
    total = int(config["requests"])
    save_to = config.get("save_answer")
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counts = {"issued": 0, "received": 0}
    lock = threading.Lock()

    def client() -> None:
        nonlocal save_to
        with requests.Session() as session:
            while True:
                with lock:
                    if counts["issued"] >= total:
                        return
                    counts["issued"] += 1
                    target, save_to = save_to, None
                started = time.perf_counter()
                try:
                    answer = session.post(url, data=body, headers=headers, timeout=600)
                except requests.RequestException as error:
                    with lock:
                        key = type(error).__name__
                        statuses[key] = statuses.get(key, 0) + 1
                    continue
                elapsed = time.perf_counter() - started
                if answer.status_code == 200:
                    MultipartDecoder(answer.content, answer.headers["Content-Type"])  # what the tool did next
                if target:
                    Path(target).write_bytes(answer.content)
                with lock:
                    latencies.append(elapsed)
                    statuses[str(answer.status_code)] = statuses.get(str(answer.status_code), 0) + 1
                    counts["received"] += len(answer.content)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(int(config.get("clients", 1)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "statuses": statuses, "received": counts["received"],
            "wall": time.perf_counter() - started, "request_bytes": len(body)}


def main() -> None:
    print(json.dumps(run(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
