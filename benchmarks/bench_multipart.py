"""Throughput of the bridge's streaming multipart parser (arterys_http/multipart.py), in process.

    .venv/bin/python -m benchmarks.bench_multipart [--mib 1024]
"""

from __future__ import annotations

import argparse
import random
import time

from arterys_http.multipart import MultipartParser


def parse_seconds(total_mib: int, chunk: int, part_mib: int) -> float:
    data = random.Random(1).randbytes(chunk)
    per_part = (part_mib << 20) // chunk
    parser = MultipartParser("benchboundary")
    started = time.perf_counter()
    parser.feed(b"--benchboundary\r\nContent-Type: application/json\r\n\r\n{}")
    for index in range((total_mib << 20) // chunk):
        if index % per_part == 0:
            parser.feed(b"\r\n--benchboundary\r\nContent-Type: application/dicom\r\n\r\n")
        parser.feed(data)
    parser.feed(b"\r\n--benchboundary--\r\n")
    parser.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    print(f"{args.mib} MiB body, parts of 2 MiB (a 1024x1024 16-bit slice each):")
    print("read size | seconds | MiB/s")
    for chunk in (64 << 10, 1 << 20):
        seconds = parse_seconds(args.mib, chunk, 2)
        print(f"{chunk >> 10:5d} KiB | {seconds:7.3f} | {args.mib / seconds:7.0f}")


if __name__ == "__main__":
    main()
