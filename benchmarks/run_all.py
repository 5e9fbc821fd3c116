"""`make bench`: every benchmark with its default sizes (a few minutes; needs about 3 GiB of free disk)."""

from __future__ import annotations

import sys

from benchmarks import bench_chunk_size, bench_multipart, bench_stream


def main() -> None:
    for module in (bench_multipart, bench_chunk_size, bench_stream):
        print(f"\n== {module.__name__} ==", flush=True)
        sys.argv = [module.__name__]
        module.main()


if __name__ == "__main__":
    main()
