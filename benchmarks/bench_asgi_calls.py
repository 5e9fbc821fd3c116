"""What granian's ASGI calls cost a small request: a bare ASGI app on the bridge's HTTP front (bridge/front.py)
in a process of its own, answering 3,000 bytes to every request, in shapes picked by the request path:

- how it reads the body: `full` up to granian's empty end-of-body message (what the bridge did), `cl` up to
  Content-Length bytes (what BodyEnd in bridge/middleware.py allows); `w` after either adds a disconnect
  watcher as the bridge's (bridge/app.py), which waits on receive() while the answer is made, and so takes
  granian's empty message itself after `cl`: granian reports a disconnect only once that message is taken;
- how it sends the answer: `one` body send (what a small answer takes now), `two` (the JSON, then the rest).

The load client (benchmarks/loadgen.py, its own process) sends bursts of N requests to each shape in turn,
R rounds; printed: the server's CPU per request (every thread, from /proc schedstat), median and quartiles
of the difference to the first shape within each round.

    .venv/bin/python -m benchmarks.bench_asgi_calls BODY [--requests 2000] [--clients 8] [--rounds 10]
        [--shapes /full-two /full-one /cl-two /cl-one /fullw-two /clw-two]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ANSWER = b"j" * 3000
ANSWER_HEAD = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(ANSWER)).encode())]
WORK_SECONDS = 0.001  # what a worker takes, while a watcher waits


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    reading, answer = scope["path"].strip("/").split("-")
    length = next(int(value) for key, value in scope["headers"] if key == b"content-length")
    got = 0
    while True:
        message = await receive()
        got += len(message.get("body", b""))
        if not message.get("more_body") or (reading.startswith("cl") and got >= length):
            break
    watcher = None
    if reading.endswith("w"):
        async def watch() -> None:
            while (await receive())["type"] == "http.request":
                pass

        watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(WORK_SECONDS)
    await send({"type": "http.response.start", "status": 200, "headers": ANSWER_HEAD})
    if answer == "one":
        await send({"type": "http.response.body", "body": ANSWER})
    else:
        await send({"type": "http.response.body", "body": ANSWER[:2000], "more_body": True})
        await send({"type": "http.response.body", "body": ANSWER[2000:], "more_body": False})
    if watcher is not None:
        watcher.cancel()


async def serve(port_file: str) -> None:
    from bridge.config import HttpLimits
    from bridge.front import HttpFront

    front = HttpFront(app, HttpLimits())
    port = front.listen("127.0.0.1", 0)
    await front.start()
    with open(port_file, "w") as out:
        out.write(str(port))
    await asyncio.Event().wait()


def cpu_seconds(pid: int) -> float:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("body", help="a request body file (e.g. make bench's bbox-8/request.bin)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--shapes", nargs="+", default=["/full-two", "/full-one", "/cl-two", "/cl-one",
                                                         "/fullw-two", "/clw-two"])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        return uvloop.run(serve(args.serve))
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        server = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_asgi_calls", args.body,
                                   "--serve", port_file])
        try:
            while not (os.path.exists(port_file) and open(port_file).read()):
                time.sleep(0.1)
            port = int(open(port_file).read())

            def burst(shape: str, count: int) -> None:
                config = {"port": port, "path": shape, "body": args.body, "content_type": "application/octet-stream",
                          "clients": args.clients, "requests": count}
                out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", json.dumps(config)],
                                     capture_output=True, text=True, check=True).stdout
                assert json.loads(out)["statuses"] == {"200": count}, out[:300]

            for shape in args.shapes:
                burst(shape, 200)  # warm-up
            cost = {shape: [] for shape in args.shapes}
            for round_ in range(args.rounds):
                for shape in args.shapes if round_ % 2 == 0 else args.shapes[::-1]:
                    before = cpu_seconds(server.pid)
                    burst(shape, args.requests)
                    cost[shape].append((cpu_seconds(server.pid) - before) * 1e6 / args.requests)
        finally:
            server.terminate()
            server.wait()
    first = cost[args.shapes[0]]
    for shape in args.shapes:
        diffs = [x - y for x, y in zip(cost[shape], first, strict=True)]
        low, _, high = statistics.quantiles(diffs, n=4)
        print(f"{shape}: {statistics.median(cost[shape]):.0f} µs of CPU per request; against {args.shapes[0]} "
              f"{statistics.median(diffs):+.0f} µs (quartiles {low:+.0f}..{high:+.0f})")
    print("load average:", " ".join(open("/proc/loadavg").read().split()[:3]))


if __name__ == "__main__":
    main()
