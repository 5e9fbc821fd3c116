"""Issue 18, row 13: a big DICOM export must not hold up the next study. Real worker and bridge processes
(default settings, the mock model): one client asks for a 2D probability mask on each of 1,500 slices of
32 x 32 with DICOM outputs; meanwhile another sends one image at a time (get-bounding-box-2d, DICOM
outputs) and we record how long each took. The export runs after the model has given back its slot, on the
worker's I/O threads.

    .venv/bin/python -m benchmarks.dicom_export [--slices 1500]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests import http_helpers as http
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import start_bridge, start_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        big = write_study(tmp / "big", [SeriesSpec("big", rows=32, cols=32, count=args.slices)])
        small = write_study(tmp / "small", [SeriesSpec("one", rows=32, cols=32, count=1)])
        worker = start_worker(tmp, "mock_model")
        bridge = start_bridge(tmp, worker.address)
        url = f"http://{bridge.address}/"
        try:
            http.post_like_original_tool(url, {"inference_command": "get-bounding-box-2d",
                                               "output_formats": ["dicom"]}, [small.instances[0].path], timeout=60)
            outcome: dict = {}

            def big_request() -> None:
                started = time.monotonic()
                response = http.post_like_original_tool(url, {"inference_command": "get-probability-mask-2d",
                                                              "output_formats": ["dicom"]},
                                                        [i.path for i in big.instances], timeout=600)
                outcome.update(status=response.status_code, seconds=time.monotonic() - started,
                               parts=len(response.content))

            thread = threading.Thread(target=big_request)
            thread.start()
            waits = []
            while thread.is_alive():
                started = time.monotonic()
                response = http.post_like_original_tool(url, {"inference_command": "get-bounding-box-2d",
                                                              "output_formats": ["dicom"]},
                                                        [small.instances[0].path], timeout=120)
                assert response.status_code == 200, response.text[:300]
                waits.append(time.monotonic() - started)
                time.sleep(0.2)
            thread.join()
            health = requests.get(f"http://{bridge.address}/healthcheck", timeout=10)
            print(f"{args.slices} slices, get-probability-mask-2d with DICOM outputs: HTTP {outcome['status']} "
                  f"after {outcome['seconds']:.1f} s ({outcome['parts'] / 1e6:.1f} MB answer)")
            print(f"one-image requests meanwhile: {len(waits)}, median {sorted(waits)[len(waits) // 2]:.2f} s, "
                  f"max {max(waits):.2f} s; /healthcheck after: {health.status_code}")
        finally:
            bridge.stop()
            worker.stop()


if __name__ == "__main__":
    main()
