"""End to end through real bridge and worker processes: a big study up, a big mask down.

Prints throughput and the bridge's peak memory against the study size. The original SDK read the whole
request into memory (peak >= study size, ratio >= 1.0); the bridge must stay bounded whatever the size.

    .venv/bin/python -m benchmarks.bench_stream [--study-mib 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import requests

from arterys_http import media
from arterys_http.request import MultipartBody, OutgoingPart, json_part
from tests.dicom_factory import write_big_study
from tests.services import start_bridge, start_worker


def streamed_body(paths: list[Path], request_json: dict, boundary: str) -> MultipartBody:
    """A multipart/related body generated from the files, 1 MiB at a time: the client holds no study."""
    parts = [json_part(request_json, name="", filename="")]
    parts += [OutgoingPart("", "", media.DICOM, p.stat().st_size, path=p) for p in paths]
    return MultipartBody(parts, boundary=boundary)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(study_mib: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        study = write_big_study(tmp / "study", study_mib << 20)
        paths = [i.path for i in study.instances]
        study_bytes = sum(p.stat().st_size for p in paths)
        worker = start_worker(tmp, "benchmarks.models:SizeModel", "--spool-dir", str(tmp))
        bridge = start_bridge(tmp, worker.address)
        try:
            url = f"http://{bridge.address}/"
            idle_rss = current_rss_mib(bridge.process.pid)
            started = time.perf_counter()
            response = requests.post(url, data=streamed_body(paths, {"mask": False}, "bench"),
                                     headers={"Content-Type": "multipart/related; boundary=bench"})
            upload_seconds = time.perf_counter() - started
            assert response.status_code == 200, response.text

            started = time.perf_counter()
            response = requests.post(url, data=streamed_body(paths, {"mask": True}, "bench"),
                                     headers={"Content-Type": "multipart/related; boundary=bench"}, stream=True)
            received = sum(len(c) for c in response.iter_content(1 << 20))
            round_trip_seconds = time.perf_counter() - started
            assert response.status_code == 200
            peak = peak_rss_mib(bridge.process.pid)
        finally:
            bridge.stop()
            worker.stop()
    return {
        "study_mib": study_bytes / (1 << 20),
        "upload_seconds": upload_seconds,
        "upload_mib_per_s": study_bytes / (1 << 20) / upload_seconds,
        "round_trip_seconds": round_trip_seconds,
        "response_mib": received / (1 << 20),
        "bridge_idle_rss_mib": idle_rss,
        "bridge_peak_rss_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-mib", type=int, nargs="+", default=[256, 1024])
    args = parser.parse_args()
    print("study MiB | upload s | upload MiB/s | up+mask s | mask MiB | bridge idle RSS | bridge peak RSS | peak/study")
    for size in args.study_mib:
        r = run(size)
        print(f"{r['study_mib']:9.0f} | {r['upload_seconds']:8.2f} | {r['upload_mib_per_s']:12.1f} | "
              f"{r['round_trip_seconds']:9.2f} | {r['response_mib']:8.0f} | {r['bridge_idle_rss_mib']:13.0f} MiB | "
              f"{r['bridge_peak_rss_mib']:13.0f} MiB | {r['bridge_peak_rss_mib'] / r['study_mib']:10.3f}")


if __name__ == "__main__":
    main()
