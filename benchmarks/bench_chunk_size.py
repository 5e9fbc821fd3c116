"""gRPC message size vs time, through a real worker: the study streamed in chunks of several sizes.

An early measurement of raw bytes through one bidi stream (64 KiB 580 ms, 256 KiB 240 ms, 1 MiB 150 ms,
4 MiB 144 ms for 135 MB up, 67 MB down). This repeats the measurement on the worker itself (receive,
spool to disk, hash, answer) to justify the 1 MiB the bridge uses.

    .venv/bin/python -m benchmarks.bench_chunk_size [--study-mib 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.models import SizeModel
from contract import inference_pb2 as pb
from tests.worker_client import request_messages, stub_for
from worker.serving.config import WorkerConfig
from worker.serving.server import create_server

SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as spool:
        worker = create_server(SizeModel(), WorkerConfig(model="bench", listen="127.0.0.1:0", spool_dir=spool))
        worker.start()
        worker.load_model()
        stub = stub_for(worker.port)
        # One synthetic "instance" would not parse as DICOM, so the study travels as attachments.
        data = bytes(range(256)) * ((args.study_mib << 20) // 256)
        parts = [(pb.PART_KIND_ATTACHMENT, "application/octet-stream", data)]
        timings = {}
        for size in SIZES:
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                for _response in stub.Infer(request_messages({}, parts, chunk=size), timeout=300):
                    pass
                best = min(best, time.perf_counter() - started)
            timings[size] = best
        worker.stop(0)
    print(f"{args.study_mib} MiB through the worker, best of {args.repeat}:")
    print("message size | seconds | MiB/s  | time vs 1 MiB")
    for size, seconds in timings.items():
        ratio = seconds / timings[1 << 20]
        print(f"{size >> 10:9d} KiB | {seconds:7.3f} | {args.study_mib / seconds:6.0f} | {ratio:6.2f}x")


if __name__ == "__main__":
    main()
