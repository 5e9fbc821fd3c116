"""A soak: many mixed requests through real `python -m worker` and `python -m bridge` processes, then a check
that nothing grew or leaked.

    .venv/bin/python -m benchmarks.soak [--requests 2000] [--clients 16] [--malformed 0.05] [--aborts 0.05]

Every mock_model command, on a small study and (one in ten) a study of a few MiB that the worker spools to
disk; a share of malformed requests (each of a kind with a known answer: 400, 405, 413, 415, 431); a share
of clients that hang up mid-upload or mid-download. Targets, each checked and printed:

* zero unexpected answers: every complete request gets its expected status and a complete body, and
  neither log has an ERROR line or a traceback;
* the RSS of the bridge and of the worker grows less than 10% from the first quarter of the requests to
  the last (the mean of samples taken every 0.1 s during each quarter);
* threads and open file descriptors of both processes, and files in the worker's spool folder, are back
  to their baseline (taken after a warm-up of every kind of request) once the load has stopped.

Exits 1 when a target is missed. tests/test_soak.py runs a short version of the same.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httptools

from mock_model import MockModel
from tests.dicom_factory import SeriesSpec, write_study
from tests.services import Service, start_bridge, start_worker

BOUNDARY = b"soak-7f3a9c"
RSS_GROWTH_LIMIT = 0.10
SETTLE_SECONDS = 15.0
ANSWER_TIMEOUT = 60.0


# ------------------------------------------------------------------------------------------------ requests


def part(content_type: bytes, data: bytes) -> bytes:
    return b"--" + BOUNDARY + b"\r\nContent-Type: " + content_type + b"\r\n\r\n" + data + b"\r\n"


def multipart(request_json: bytes, dicoms: list[bytes]) -> bytes:
    return (part(b"application/json", request_json) + b"".join(part(b"application/dicom", d) for d in dicoms)
            + b"--" + BOUNDARY + b"--\r\n")


def http_request(body: bytes, content_type: bytes = b"multipart/related; boundary=" + BOUNDARY,
                 method: bytes = b"POST", extra: bytes = b"") -> bytes:
    return (method + b" / HTTP/1.1\r\nHost: bridge\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n" + extra + b"\r\n"
            + body)


def malformed_requests(dicoms: list[bytes]) -> dict[str, tuple[bytes, int]]:
    """Kinds of malformed request -> (the request, the status the bridge must answer)."""
    good = multipart(b'{"inference_command": "get-bounding-box-2d"}', dicoms)
    return {
        "invalid JSON part": (http_request(multipart(b"{not json", dicoms)), 400),
        "unknown command": (http_request(multipart(b'{"inference_command": "get-nothing"}', dicoms)), 400),
        "part not DICOM": (http_request(multipart(b"{}", [b"this is not a DICOM file"])), 400),
        "no boundary": (http_request(good, b"multipart/related"), 400),
        "JSON not first": (http_request(part(b"application/dicom", dicoms[0]) + part(b"application/json", b"{}")
                                        + b"--" + BOUNDARY + b"--\r\n"), 400),
        "body cut short": (http_request(good[: len(good) // 2]), 400),
        "unsupported type": (http_request(good, b"text/plain"), 415),
        "wrong method": (http_request(b"", method=b"GET"), 405),
        "headers too large": (http_request(good, extra=b"X-Padding: " + b"p" * 70_000 + b"\r\n"), 431),
        "bad Content-Length": (b"POST / HTTP/1.1\r\nHost: bridge\r\nContent-Length: 12x\r\n\r\n", 400),
        "body over the limit": (b"POST / HTTP/1.1\r\nHost: bridge\r\nContent-Type: multipart/related; boundary=b"
                                b"\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n", 413),
    }


# Malformed beyond HTTP/1.1's grammar: refused by the HTTP server itself (hyper), with its bare status and no
# body, before the bridge sees them (docs/protocol.md, "Requests the HTTP server refuses").
REFUSED_BY_THE_SERVER = {"bad Content-Length"}


@dataclass
class Planned:
    kind: str  # "ok", "malformed", "abort-upload", "abort-download"
    label: str  # the command, or the malformed kind
    request: bytes
    expected: int = 200


@dataclass
class Outcome:
    planned: Planned
    status: int | None = None
    seconds: float = 0.0
    problem: str = ""


class Studies:
    """The request bodies: a small study and a big one (spooled by the worker), as bytes."""

    def __init__(self, folder: Path, big_slices: int = 24) -> None:
        small = write_study(folder / "small", [SeriesSpec("ct", rows=32, cols=32, count=4),
                                               SeriesSpec("mr", rows=24, cols=16, count=2, modality="MR"),
                                               SeriesSpec("mf", rows=16, cols=16, count=1, frames=3)])
        big = write_study(folder / "big", [SeriesSpec("big ct", rows=256, cols=256, count=big_slices)], seed=11)
        self.small = [i.path.read_bytes() for i in small.instances]
        self.big = [i.path.read_bytes() for i in big.instances]

    def request(self, command: str, big: bool) -> bytes:
        return http_request(multipart(json.dumps({"inference_command": command}).encode(),
                                      self.big if big else self.small))


def plan(studies: Studies, count: int, malformed: float, aborts: float, seed: int) -> list[Planned]:
    rng = random.Random(seed)
    bad = malformed_requests(studies.small)
    commands = list(MockModel.commands)
    planned = []
    for index in range(count):
        draw = rng.random()
        if draw < malformed:
            label = rng.choice(sorted(bad))
            planned.append(Planned("malformed", label, bad[label][0], bad[label][1]))
        elif draw < malformed + aborts:
            kind = rng.choice(["abort-upload", "abort-download"])
            command = "get-probability-mask" if kind == "abort-download" else rng.choice(commands)
            planned.append(Planned(kind, command, studies.request(command, big=True)))
        else:
            command = commands[index % len(commands)]
            planned.append(Planned("ok", command, studies.request(command, big=rng.random() < 0.1)))
    return planned


# ------------------------------------------------------------------------------------------------ the client


class _Responses:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = 0
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


def send(port: int, planned: Planned, rng: random.Random) -> Outcome:
    outcome = Outcome(planned)
    started = time.monotonic()
    request = planned.request
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
            if planned.kind == "abort-upload":
                sock.sendall(request[: rng.randrange(len(request) // 10, len(request) * 9 // 10)])
                return outcome  # and hang up with the body half sent
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered early (a refused body) and closed: the answer is still readable
            responses = _Responses()
            while not responses.complete:
                data = sock.recv(1 << 16)
                if not data:
                    break
                responses.parser.feed_data(data)
                if planned.kind == "abort-download" and responses.status is not None and responses.body > 0:
                    return outcome  # and hang up with the answer half read
            outcome.status = responses.status
            if planned.kind == "abort-download":
                outcome.problem = "the answer was complete before the client could hang up in the middle"
            elif not responses.complete:
                outcome.problem = "the connection closed before the answer was complete"
            elif responses.status != planned.expected:
                outcome.problem = f"status {responses.status}, expected {planned.expected}"
            elif responses.status != 200 and responses.headers.get("content-type") != "application/json" \
                    and planned.label not in REFUSED_BY_THE_SERVER:
                outcome.problem = "an error answer without a JSON body"
    except (OSError, httptools.HttpParserError) as error:
        outcome.problem = f"{type(error).__name__}: {error}"
    finally:
        outcome.seconds = time.monotonic() - started
    return outcome


def run_clients(port: int, planned: list[Planned], clients: int, seed: int, on_done) -> list[Outcome]:
    work: queue.Queue = queue.Queue()
    for index, item in enumerate(planned):
        work.put((index, item))
    outcomes: list[Outcome | None] = [None] * len(planned)

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while True:
            try:
                index, item = work.get_nowait()
            except queue.Empty:
                return
            outcomes[index] = send(port, item, rng)
            on_done()

    threads = [threading.Thread(target=client, args=(n,), name=f"soak-client-{n}") for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


# ------------------------------------------------------------------------------------------- measurements


def proc_status(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def spool_files(spool: Path) -> int:
    return sum(1 for path in spool.rglob("*") if path.is_file() and path.name != ".lock")


@dataclass
class Snapshot:
    bridge_threads: int
    bridge_fds: int
    worker_threads: int
    worker_fds: int
    spool_files: int

    @classmethod
    def take(cls, bridge: Service, worker: Service, spool: Path) -> Snapshot:
        b, w = bridge.process.pid, worker.process.pid
        return cls(proc_status(b, "Threads"), open_fds(b), proc_status(w, "Threads"), open_fds(w),
                   spool_files(spool))

    def within(self, baseline: Snapshot) -> bool:
        return all(getattr(self, name) <= getattr(baseline, name) for name in self.__dataclass_fields__)


@dataclass
class RssSampler:
    """RSS (KiB) of both processes every 0.1 s, each sample tagged with how many requests had finished."""

    bridge_pid: int
    worker_pid: int
    finished: int = 0
    samples: list[tuple[int, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((self.finished, proc_status(self.bridge_pid, "VmRSS"),
                                 proc_status(self.worker_pid, "VmRSS")))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def quarter_means(self, total: int) -> dict[str, tuple[float, float]]:
        """name -> (mean RSS MiB during the first quarter of requests, during the last quarter)."""
        first = [s for s in self.samples if s[0] < total // 4]
        last = [s for s in self.samples if s[0] >= total - total // 4]
        first, last = first or self.samples[:1], last or self.samples[-1:]
        return {name: (statistics.mean(s[column] for s in first) / 1024, statistics.mean(s[column] for s in last)
                       / 1024) for name, column in (("bridge", 1), ("worker", 2))}


# ---------------------------------------------------------------------------------------------- the soak


@dataclass
class Report:
    outcomes: list[Outcome]
    seconds: float
    rss: dict[str, tuple[float, float]]
    baseline: Snapshot
    after: Snapshot
    log_problems: list[str]

    @property
    def unexpected(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem]

    @property
    def rss_growth(self) -> dict[str, float]:
        return {name: last / first - 1 for name, (first, last) in self.rss.items()}

    @property
    def failures(self) -> list[str]:
        failures = [f"{o.planned.kind} {o.planned.label}: {o.problem}" for o in self.unexpected]
        failures += self.log_problems
        failures += [f"{name} RSS grew {growth:+.1%} (limit {RSS_GROWTH_LIMIT:.0%})"
                     for name, growth in self.rss_growth.items() if growth >= RSS_GROWTH_LIMIT]
        if not self.after.within(self.baseline):
            failures.append(f"not back to the baseline: {self.after} after, {self.baseline} before")
        return failures

    def table(self) -> str:
        kinds = Counter(o.planned.kind for o in self.outcomes)
        ok = sorted(o.seconds for o in self.outcomes if o.planned.kind == "ok" and not o.problem)
        p = (lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] * 1000) if ok else (lambda q: float("nan"))
        lines = [
            f"soak: {len(self.outcomes)} requests in {self.seconds:.1f} s "
            f"({len(self.outcomes) / self.seconds:.1f} requests/s)",
            f"  requests   valid {kinds['ok']}, malformed {kinds['malformed']}, aborted mid-upload "
            f"{kinds['abort-upload']}, mid-download {kinds['abort-download']}; unexpected {len(self.unexpected)}",
            f"  latency    valid requests p50 {p(0.5):.0f} ms, p95 {p(0.95):.0f} ms, max {p(1.0):.0f} ms",
            f"  log        ERROR lines or tracebacks: {len(self.log_problems)}",
            "  RSS (MiB)  first quarter  last quarter  growth   target",
        ]
        for name, (first, last) in self.rss.items():
            growth = self.rss_growth[name]
            lines.append(f"    {name:8} {first:13.1f}  {last:12.1f}  {growth:+6.1%}   < {RSS_GROWTH_LIMIT:.0%} "
                         f"{'ok' if growth < RSS_GROWTH_LIMIT else 'MISSED'}")
        lines.append("  held           before  after   target")
        for name in self.baseline.__dataclass_fields__:
            before, after = getattr(self.baseline, name), getattr(self.after, name)
            lines.append(f"    {name:13} {before:6}  {after:5}   <= before {'ok' if after <= before else 'MISSED'}")
        return "\n".join(lines)


def log_problems(*services: Service) -> list[str]:
    problems = []
    for service in services:
        for line in service.log().splitlines():
            if " ERROR " in line or line.startswith("Traceback") or line[:1] in ("E", "F") and line[1:5].isdigit():
                problems.append(f"{service.log_path.name}: {line[:300]}")
    return problems


def soak(work: Path, requests: int = 2000, clients: int = 16, malformed: float = 0.05, aborts: float = 0.05,
         seed: int = 1, big_slices: int = 24, progress=None) -> Report:
    studies = Studies(work / "studies", big_slices)
    spool = work / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    worker = start_worker(work, "mock_model", "--spool-dir", str(spool), "--spool-memory-mib", "1",
                          "--concurrency", "2", "--queue-size", "32")
    bridge = start_bridge(work, worker.address)
    try:
        # Warm-up: every kind of request, so that pools and lazily started threads exist before the baseline.
        warm = [Planned("ok", c, studies.request(c, big=big)) for c in MockModel.commands for big in (False, True)]
        warm += [Planned("malformed", k, r, s) for k, (r, s) in malformed_requests(studies.small).items()]
        warm += [Planned(k, "get-probability-mask", studies.request("get-probability-mask", True))
                 for k in ("abort-upload", "abort-download")] * 2
        warm_outcomes = run_clients(bridge.port, warm, clients, seed, lambda: None)
        problems = [o for o in warm_outcomes if o.problem]
        if problems:
            raise RuntimeError(f"the warm-up failed: {problems[0].planned.label}: {problems[0].problem}")
        baseline = settle(bridge, worker, spool, None)
        planned = plan(studies, requests, malformed, aborts, seed)
        sampler = RssSampler(bridge.process.pid, worker.process.pid).start()
        lock = threading.Lock()

        def done() -> None:
            with lock:
                sampler.finished += 1
                if progress and sampler.finished % max(1, requests // 10) == 0:
                    progress(f"{sampler.finished}/{requests} requests")

        started = time.monotonic()
        outcomes = run_clients(bridge.port, planned, clients, seed, done)
        seconds = time.monotonic() - started
        sampler.stop()
        after = settle(bridge, worker, spool, baseline)
        return Report(outcomes, seconds, sampler.quarter_means(requests), baseline, after,
                      log_problems(bridge, worker))
    finally:
        bridge.stop()
        worker.stop()


def settle(bridge: Service, worker: Service, spool: Path, baseline: Snapshot | None) -> Snapshot:
    """A snapshot once the processes are quiet: at the baseline, or the last one after SETTLE_SECONDS."""
    deadline = time.monotonic() + (SETTLE_SECONDS if baseline else 1.0)
    while True:
        time.sleep(0.2)
        snapshot = Snapshot.take(bridge, worker, spool)
        if (baseline is not None and snapshot.within(baseline)) or time.monotonic() >= deadline:
            return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--malformed", type=float, default=0.05, help="share of malformed requests")
    parser.add_argument("--aborts", type=float, default=0.05, help="share of clients hanging up mid-way")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big-slices", type=int, default=24, help="256 x 256 slices of the big study")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        report = soak(Path(folder), args.requests, args.clients, args.malformed, args.aborts, args.seed,
                      args.big_slices, progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(report.table())
    for failure in report.failures[:20]:
        print(f"MISSED: {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
