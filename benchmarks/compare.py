"""`make bench`: our bridge + worker against the original single-process architecture, and against the floor.

Three systems answer the same requests, each from two load clients (client profiles), in processes of their own:

- reference: the original SDK's architecture rebuilt (benchmarks/reference_gateway.py): Flask's threaded
  development server, the body read whole, parsed and answered in memory, the model in-process;
- ours: real `python -m worker` and `python -m bridge` processes with default settings;
- floor: the same request and answer bytes moved over a plain loopback socket (benchmarks/floor_server.py).

The batching workloads (gpu-*, onnx-*) run ours alone, each with a model of its own (`Workload.model`): a GPU
stand-in of 40 ms per call + 4 ms per study (benchmarks/models.py) with and without `infer_batch`, and the
ONNX Runtime example (example_models.onnx_body) with batches of up to 8 or of one, at 32 clients and at 1;
with the lean client only (they measure the model's batching, not the HTTP client).

The client profiles:

- lean: benchmarks/loadgen.py, asyncio on raw sockets, the request file sent with sendfile, the answer read
  into a reused 1 MiB buffer: as little client CPU as a client can spend;
- toolbelt: benchmarks/toolbelt_client.py, the original inference-test-tool's way: a `requests` Session
  posting the bytes of a requests_toolbelt `MultipartEncoder`, the answer read whole (`r.content`) and
  split with `MultipartDecoder`.

Both reference and ours run the same model code: the original SDK's mock handlers
(benchmarks/original_handlers.py), hosted unchanged in our worker. Rounds are interleaved (every system
and workload once per round, in a rotating order, fresh servers each round, both profiles on each server
in a rotating order); figures are medians over rounds with min..max. Results are printed with a legend
and written to BENCHMARKS.md.

    .venv/bin/python -m benchmarks.compare [--rounds 3] [--only 3d-256,bbox-8] [--profiles lean,toolbelt]
                                           [--quick] [--output BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import requests
from requests_toolbelt import MultipartEncoder

from arterys_http import media
from arterys_http.request import MultipartBody, OutgoingPart, json_part
from tests.dicom_factory import SeriesSpec, write_study
from tests.http_helpers import original_tool_fields
from tests.services import ROOT, free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Client profile -> the load client's module (see the docstring).
PROFILES = {"lean": "benchmarks.loadgen", "toolbelt": "benchmarks.toolbelt_client"}
SYSTEM_ORDER = ["reference", "ours", "ours-typed", "ours-3w", "floor"]
# Everything after this line of the report is written by hand (alternatives measured, profiles) and kept.
KEEP_MARKER = "<!-- written by hand below: kept by make bench -->"
LEGEND = """\
- **client**: the load client's profile. *lean*: asyncio on raw sockets, the request sent with sendfile, the
  answer read into a reused buffer (benchmarks/loadgen.py). *toolbelt*: the original test tool's way, a
  `requests` Session posting the bytes of a requests_toolbelt `MultipartEncoder`, the answer read whole with
  `r.content` and split with `MultipartDecoder` (benchmarks/toolbelt_client.py).
- **p50 / p90**: latency of one request as the client saw it (send start to last answer byte), ms.
- **req/s**: answered requests per second of wall time over the measured requests.
- **errors**: answers that were not 200, plus broken connections.
- **CPU/req**: user + system CPU of the serving processes (bridge + worker for ours) from /proc, divided
  by the requests answered, ms. The load client's own CPU is not counted; **by process** splits it;
  **client CPU/req** is the load client's own (all of its threads), ms.
- **RSS**: peak resident memory (VmHWM, reset before each workload) of each serving process, MB.
- **vs ref**: ours divided by the reference in the same round with the same client (latency and CPU: lower
  is better; req/s: higher is better). Medians over rounds, min..max in brackets.
- **Batching** (gpu-*, onnx-*: ours only, a model of their own, the lean client): p99 is the 99th percentile of
  the client's latency, ms; "vs batches of 1" divides a batched workload's figure by the one of the same
  clients without batching, measured in the same round.
- **load**: the machine's 1-minute load average when the row's measurement started (2 cores; other
  sessions' tests share them).
"""


@dataclass
class Workload:
    name: str
    description: str
    slices: int
    command: str
    clients: int
    requests: int
    size: int = 512  # rows = columns
    systems: tuple = ("reference", "ours", "floor")
    bodies: dict[str, tuple[Path, str]] = field(default_factory=dict)  # profile -> (request file, Content-Type)
    study_bytes: int = 0
    model: str = ""  # the worker's --model for "ours" (default: the original SDK's handlers)
    profiles: tuple = ()  # the client profiles it runs with (default: every one asked for)


def workloads(quick: bool) -> list[Workload]:
    scale = (lambda n: max(2, n // 20)) if quick else (lambda n: n)
    size = 64 if quick else 512
    return [
        Workload("3d-256", "3D mask, 256 slices 512x512 16-bit, 1 client", 256, "get-probability-mask", 1,
                 scale(6), size),
        Workload("3d-512", "3D mask, 512 slices, 1 client", 512, "get-probability-mask", 1, scale(4), size),
        Workload("3d-64", "3D mask, 64 slices, 1 client", 64, "get-probability-mask", 1, scale(20), size),
        Workload("bbox-8", "bounding box on 1 image, 8 clients", 1, "get-bounding-box-2d", 8, scale(800), size),
        Workload("bbox-32", "bounding box on 1 image, 32 clients", 1, "get-bounding-box-2d", 32, scale(800), size),
        Workload("2d-16", "16 images, one 2D mask each, 1 client", 16, "get-probability-mask-2d", 1, scale(60), size),
        Workload("scale-1w", "model sleeping 100 ms, 1 worker, 12 clients", 1, "sleep", 12, scale(120), size,
                 systems=("ours",)),
        Workload("scale-3w", "model sleeping 100 ms, 3 workers behind one bridge, 12 clients", 1, "sleep", 12,
                 scale(240), size, systems=("ours-3w",)),
        *batching_workloads(scale, quick),
    ]


GPU = {1: "benchmarks.models:FixedCostModel", 8: "benchmarks.models:BatchedFixedCostModel"}
ONNX = {1: "benchmarks.models:onnx_body_one_by_one", 8: "example_models.onnx_body"}


def batching_workloads(scale, quick: bool) -> list[Workload]:
    """gpu-BxC / onnx-BxC: batches of at most B, C clients, one-image studies."""
    out = []
    for batch, clients, requests_ in ((1, 32, 240), (8, 32, 960), (1, 1, 200), (8, 1, 200)):
        out.append(Workload(f"gpu-{batch}x{clients}", f"GPU stand-in (40 ms + 4 ms per study, sleeping), batches of "
                            f"at most {batch}, {clients} client(s), one 256x256 image", 1, "", clients,
                            scale(requests_), 64 if quick else 256, systems=("ours",), model=GPU[batch],
                            profiles=("lean",)))
    for batch in (1, 8):
        out.append(Workload(f"onnx-{batch}x32", f"example_models.onnx_body on ONNX Runtime (CPU), batches of at most "
                            f"{batch}, 32 clients, one 512x512 CT image", 1, "segment-body", 32, scale(480),
                            64 if quick else 512, systems=("ours",), model=ONNX[batch], profiles=("lean",)))
    return out


# --------------------------------------------------------------------------------------------- inputs


def write_body(workload: Workload, folder: Path) -> None:
    """The request of each client profile, written once to a file. lean: as the Arterys app sends it, the JSON
    part, then one application/dicom part per file (each with only a Content-Type). toolbelt: the original
    test tool's MultipartEncoder over its own fields (form-data parts with names and filenames)."""
    record = write_study(folder / "study", [SeriesSpec("ct", rows=workload.size, cols=workload.size,
                                                       count=workload.slices)])
    request_json = {"inference_command": workload.command}
    parts = [json_part(request_json, name="", filename="")]
    parts += [OutgoingPart("", "", media.DICOM, i.path.stat().st_size, path=i.path) for i in record.instances]
    body = MultipartBody(parts, boundary="bench-boundary-7d1f")
    workload.study_bytes = sum(part.size for part in parts[1:])
    lean_path = folder / "request-lean.bin"
    with open(lean_path, "wb") as out:
        for piece in body:
            out.write(piece)
    workload.bodies["lean"] = (lean_path, f"multipart/related; boundary={body.boundary}")
    encoder = MultipartEncoder(fields=original_tool_fields(request_json, [i.path for i in record.instances]))
    toolbelt_path = folder / "request-toolbelt.bin"
    toolbelt_path.write_bytes(encoder.to_string())
    workload.bodies["toolbelt"] = (toolbelt_path, f'multipart/related; boundary="{encoder.boundary_value}"')


# ------------------------------------------------------------------------------------------- processes


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1000
    return float("nan")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


@dataclass
class System:
    """The serving processes of one system, by role."""

    name: str
    port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BRIDGE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def spawn_reporting_port(args: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    """Starts a process that prints 'listening on PORT' first; returns it and the port."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=open(log, "ab"))
    line = process.stdout.readline().decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"{args} did not start: {line!r}\n{log.read_text()}")
    return process, int(line.split()[-1])


def wait_ready(port: int, processes: dict[str, subprocess.Popen], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for role, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{role} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).text == "READY":
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"not READY after {timeout} s:\n{log.read_text()[-4000:]}")


def start_ours(workers: int, model: str, log: Path) -> System:
    processes, addresses = {}, []
    for index in range(workers):
        port = free_port()
        addresses.append(f"127.0.0.1:{port}")
        processes[f"worker{index + 1}" if workers > 1 else "worker"] = spawn(
            ["-m", "worker", "--model", model, "--listen", addresses[-1]], log)
    target = addresses[0] if workers == 1 else "ipv4:" + ",".join(addresses)
    port = free_port()
    processes["bridge"] = spawn(["-m", "bridge", "--worker", target, "--listen", f"127.0.0.1:{port}"], log)
    system = System("ours", port, processes)
    wait_ready(port, processes, log)
    return system


def start_system(name: str, workload: Workload, answers: dict[str, Path], log: Path) -> System:
    if name == "reference":
        process, port = spawn_reporting_port(["-m", "benchmarks.reference_gateway"], log)
        system = System(name, port, {"reference": process})
        wait_ready(port, system.processes, log)
        return system
    if name == "floor":
        process, port = spawn_reporting_port(["-m", "benchmarks.floor_server", "--answer",
                                              str(answers[workload.name])], log)
        return System(name, port, {"floor": process})
    if name == "ours-typed":
        return start_ours(1, "mock_model", log)
    if workload.model:
        return start_ours(1, workload.model, log)
    return start_ours(3 if name == "ours-3w" else 1, "benchmarks.original_handlers:model", log)


# ----------------------------------------------------------------------------------------------- load


def load(port: int, workload: Workload, requests_: int, clients: int, profile: str = "lean",
         save_answer: Path | None = None) -> dict:
    """Runs the profile's load client; its JSON answer, with `client_cpu`: the client's CPU seconds."""
    body, content_type = workload.bodies[profile]
    config = {"port": port, "body": str(body), "content_type": content_type, "clients": clients,
              "requests": requests_}
    if save_answer:
        config["save_answer"] = str(save_answer)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", PROFILES[profile], json.dumps(config)], cwd=ROOT,
                         capture_output=True)
    if out.returncode != 0:
        raise RuntimeError(f"the {profile} load client failed: {out.stderr.decode(errors='replace')[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout)
    result["client_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(system: System, workload: Workload, profile: str) -> dict:
    pids = system.pids()
    warmup = max(2, workload.clients) if workload.slices < 64 else 1
    load(system.port, workload, warmup, workload.clients, profile)
    for pid in pids.values():
        reset_peak_rss(pid)
    load_average = os.getloadavg()[0]
    cpu_before = {role: proc_cpu_seconds(pid) for role, pid in pids.items()}
    result = load(system.port, workload, workload.requests, workload.clients, profile)
    cpu_by_role = {role: proc_cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
    cpu = sum(cpu_by_role.values())
    ok = result["statuses"].get("200", 0)
    return {
        "p50": percentile(result["latencies"], 0.5) * 1000,
        "p90": percentile(result["latencies"], 0.9) * 1000,
        "p99": percentile(result["latencies"], 0.99) * 1000,
        "rps": len(result["latencies"]) / result["wall"],
        "errors": sum(n for status, n in result["statuses"].items() if status != "200"),
        "statuses": result["statuses"],
        "cpu_ms": cpu * 1000 / max(ok, 1),
        "cpu_ms_by_role": {role: seconds * 1000 / max(ok, 1) for role, seconds in cpu_by_role.items()},
        "rss": {role: peak_rss_mb(pid) for role, pid in pids.items()},
        "client_cpu_ms": result["client_cpu"] * 1000 / max(len(result["latencies"]), 1),
        "load": load_average,
    }


# -------------------------------------------------------------------------------------------- reports


def spread(values: list[float], digits: int = 0) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    median = fmt.format(statistics.median(values))
    return median if len(values) == 1 else f"{median} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def ratios(results: dict, workload: str, system: str, profile: str, key: str) -> list[float]:
    """Ours over the reference, round by round, with the same client profile."""
    ours, ref = results.get((workload, system, profile), []), results.get((workload, "reference", profile), [])
    return [o[key] / r[key] for o, r in zip(ours, ref, strict=False) if r[key]]


def report(results: dict, work: list[Workload], profiles: list[str]) -> str:
    lines = ["| workload | system | client | p50 ms | p90 ms | req/s | errors | CPU/req ms | by process | "
             "client CPU/req ms | peak RSS MB | vs ref: p50 | vs ref: req/s | vs ref: CPU | load |",
             "|" + " --- |" * 15]
    for workload in work:
        systems = sorted({s for (w, s, _) in results if w == workload.name}, key=SYSTEM_ORDER.index)
        for system in systems:
            for profile in profiles:
                rows = results.get((workload.name, system, profile))
                if not rows:
                    continue
                roles = rows[0]["rss"].keys()
                rss = ", ".join(f"{role} {spread([r['rss'][role] for r in rows])}" for role in roles)
                cpu = ", ".join(f"{role} {spread([r['cpu_ms_by_role'][role] for r in rows], 1)}" for role in roles) \
                    if len(roles) > 1 else ""
                compare = system != "reference" and (workload.name, "reference", profile) in results
                lines.append("| " + " | ".join([
                    workload.name, system, profile,
                    spread([r["p50"] for r in rows]), spread([r["p90"] for r in rows]),
                    spread([r["rps"] for r in rows], 1), spread([r["errors"] for r in rows]),
                    spread([r["cpu_ms"] for r in rows], 1), cpu, spread([r["client_cpu_ms"] for r in rows], 1), rss,
                    spread(ratios(results, workload.name, system, profile, "p50"), 2) if compare else "",
                    spread(ratios(results, workload.name, system, profile, "rps"), 2) if compare else "",
                    spread(ratios(results, workload.name, system, profile, "cpu_ms"), 2) if compare else "",
                    spread([r["load"] for r in rows], 1),
                ]) + " |")
    return "\n".join(lines)


def same_round(results: dict, workload: str, other: str, key: str, other_key: str | None = None) -> list[float]:
    """Per round, `key` of one workload divided by `other_key` (default: the same) of another, both on ours with
    the lean client: the rounds interleave the workloads, so each ratio compares figures minutes apart at most."""
    mine, theirs = results.get((workload, "ours", "lean"), []), results.get((other, "ours", "lean"), [])
    return [m[key] / t[other_key or key] for m, t in zip(mine, theirs, strict=False) if t[other_key or key]]


def unbatched(name: str) -> str:
    """gpu-8x32 -> gpu-1x32: the same workload without batching."""
    family, _, shape = name.partition("-")
    return f"{family}-1x{shape.partition('x')[2]}"


def batching_report(results: dict, work: list[Workload]) -> str:
    """The batching workloads with their p99, each batched one against the same clients without batching."""
    lines = ["| workload | p50 ms | p99 ms | req/s | errors | req/s vs batches of 1 | p50 vs batches of 1 |",
             "|" + " --- |" * 7]
    for workload in work:
        rows = results.get((workload.name, "ours", "lean"), [])
        if not workload.model or not rows:
            continue
        other = unbatched(workload.name)
        compare = other != workload.name and (other, "ours", "lean") in results
        lines.append("| " + " | ".join([
            workload.name, spread([r["p50"] for r in rows]), spread([r["p99"] for r in rows]),
            spread([r["rps"] for r in rows], 1), spread([r["errors"] for r in rows]),
            spread(same_round(results, workload.name, other, "rps"), 2) if compare else "",
            spread(same_round(results, workload.name, other, "p50"), 2) if compare else "",
        ]) + " |")
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def targets(results: dict, work: dict[str, Workload], profiles: list[str]) -> list[str]:
    """The issue's targets, for each client profile, each with its measured figure (median, min..max)."""
    out = []

    def line(ok: bool, profile: str, text: str) -> None:
        out.append(f"- [{'x' if ok else ' '}] {profile}: {text}")

    def ratio_target(profile: str, workload: str, key: str, limit: float, text: str, higher: bool = False) -> None:
        values = ratios(results, workload, "ours", profile, key)
        if values:
            value = _median(values)
            line(value >= limit if higher else value <= limit, profile,
                 f"{text} {'at least' if higher else 'at most'} {limit}x the reference: {spread(values, 2)}x")

    for profile in profiles:
        ratio_target(profile, "3d-256", "p50", 0.6, "3D-256 latency")
        ratio_target(profile, "3d-256", "cpu_ms", 0.8, "3D-256 server CPU per request")
        ratio_target(profile, "3d-64", "p50", 0.8, "3D-64 latency")
        ratio_target(profile, "3d-64", "cpu_ms", 1.0, "3D-64 server CPU per request")
        if ("bbox-8", "ours", profile) in results and ("bbox-8", "reference", profile) in results:
            values = ratios(results, "bbox-8", "ours", profile, "rps")
            errors = sum(r["errors"] for r in results[("bbox-8", "ours", profile)])
            line(_median(values) >= 1.2 and errors == 0, profile, f"bounding box at 8 clients at least 1.2x the "
                 f"req/s, no error: {spread(values, 2)}x, {errors} errors")
        if ("bbox-32", "ours", profile) in results:
            errors = sum(r["errors"] for r in results[("bbox-32", "ours", profile)])
            line(errors == 0, profile, f"bounding box at 32 clients without error: {errors} errors")
        ratio_target(profile, "2d-16", "p50", 0.8, "2D-16 latency")
        if ("3d-256", "ours", profile) in results and ("3d-512", "ours", profile) in results:
            small = _median([r["rss"]["bridge"] for r in results[("3d-256", "ours", profile)]])
            big = _median([r["rss"]["bridge"] for r in results[("3d-512", "ours", profile)]])
            line(max(small, big) < 100 and abs(big - small) <= 0.1 * small, profile,
                 f"bridge peak RSS under 100 MB and within 10% between 3D-256 and 3D-512: {small:.0f} / {big:.0f} MB")
        for name in ("3d-256", "3d-512"):
            for system, limit in (("ours-typed", 1.5), ("ours", 2.5)):
                if (name, system, profile) in results:
                    peak = _median([r["rss"]["worker"] for r in results[(name, system, profile)]])
                    study_mb = work[name].study_bytes / 1e6
                    model = "typed mock model" if system == "ours-typed" else "legacy handler"
                    line(peak <= limit * study_mb, profile, f"{name} worker peak RSS at most {limit}x the study "
                         f"({model}): {peak:.0f} MB for {study_mb:.0f} MB = {peak / study_mb:.2f}x")
        if ("scale-1w", "ours", profile) in results and ("scale-3w", "ours-3w", profile) in results:
            one = _median([r["rps"] for r in results[("scale-1w", "ours", profile)]])
            three = _median([r["rps"] for r in results[("scale-3w", "ours-3w", profile)]])
            line(three >= 2.7 * one, profile, f"3 workers at least 2.7x the req/s of one: {three:.1f} / {one:.1f} = "
                 f"{three / one:.2f}x")
    if ("gpu-8x32", "ours", "lean") in results and ("gpu-1x32", "ours", "lean") in results:
        gain = _median(same_round(results, "gpu-8x32", "gpu-1x32", "rps"))
        errors = sum(r["errors"] for name in ("gpu-8x32", "gpu-1x32") for r in results[(name, "ours", "lean")])
        out.append(f"- [{'x' if gain >= 4 and errors == 0 else ' '}] GPU stand-in at 32 clients, batches of up to 8: "
                   f"at least 4x the req/s of one study per call, no error: {gain:.2f}x, {errors} errors")
    if ("gpu-8x1", "ours", "lean") in results and ("gpu-1x1", "ours", "lean") in results:
        p99 = _median([r["p99"] for r in results[("gpu-8x1", "ours", "lean")]])
        p50 = _median([r["p50"] for r in results[("gpu-1x1", "ours", "lean")]])
        ratio = _median(same_round(results, "gpu-8x1", "gpu-1x1", "p99", "p50"))
        out.append(f"- [{'x' if ratio <= 2 else ' '}] GPU stand-in at low load (1 client): p99 with batching at most "
                   f"2x the p50 without: {p99:.0f} / {p50:.0f} ms = {ratio:.2f}x")
    if ("onnx-8x32", "ours", "lean") in results and ("onnx-1x32", "ours", "lean") in results:
        gain = _median(same_round(results, "onnx-8x32", "onnx-1x32", "rps"))
        out.append(f"- (no target) the ONNX example on this CPU at 32 clients, batches of up to 8 against one: "
                   f"{gain:.2f}x the req/s")
    return out


def write_report(args, work: list[Workload], profiles: list[str], results: dict, rounds: int, minutes: float,
                 final: bool) -> None:
    """The report of the rounds done so far: printed when final, written to args.output (the hand-written part
    after KEEP_MARKER kept)."""
    table = report(results, work, profiles)
    batching = batching_report(results, work)
    goals = targets(results, {w.name: w for w in work}, profiles)
    loads = [r["load"] for rows in results.values() for r in rows]
    described = "\n".join(f"- **{w.name}**: {w.description}; {w.requests} requests, study "
                          f"{w.study_bytes / 1e6:.1f} MB" for w in work)
    text = (f"# Benchmarks\n\n`make bench` (`python -m benchmarks.compare`), {rounds} round(s)"
            f"{'' if final else f' of {args.rounds}'}{' (quick)' if args.quick else ''}, client profiles "
            f"{', '.join(profiles)}, {minutes:.0f} minutes; the machine's 1-minute load average {spread(loads, 1)} "
            f"during the run.\n\nMachine: {environment()}.\n\n## Workloads\n\n{described}\n\n"
            f"## Results\n\n{table}\n\n"
            + (f"### Batching\n\n{batching}\n\n" if batching.count("\n") > 1 else "")
            + f"## Legend\n\n{LEGEND}\n## Targets\n\n" + "\n".join(goals) + "\n")
    if final:
        print("\n" + table + "\n\n" + batching + "\n\n" + LEGEND + "\n" + "\n".join(goals))
    if args.output:
        output = Path(args.output)
        kept = ""
        if output.exists() and KEEP_MARKER in output.read_text():
            kept = "\n" + KEEP_MARKER + output.read_text().split(KEEP_MARKER, 1)[1]
        output.write_text(text + kept)
        print(f"\nwritten to {args.output}", flush=True)


def rotated(items: list, index: int) -> list:
    """`items` starting at position `index` (modulo their number): each round begins somewhere else."""
    return items[index % len(items):] + items[:index % len(items)]


def environment() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(line.split(":", 1)[1].strip() for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    packages = ", ".join(f"{name} {metadata.version(name)}" for name in
                         ("granian", "grpcio", "protobuf", "flask", "werkzeug", "uvloop", "pydicom", "numpy",
                          "requests", "urllib3", "requests-toolbelt") if _installed(name))
    return (f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {os.cpu_count()} cores, {memory} "
            f"memory; Linux {platform.release()}; Python {platform.python_version()}; {packages}")


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated client profiles")
    parser.add_argument("--quick", action="store_true", help="tiny studies, few requests (the smoke test)")
    parser.add_argument("--no-typed", action="store_true", help="skip the typed mock model's memory rows")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"), help="report file (empty: none)")
    args = parser.parse_args(argv)
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown or not profiles:
        parser.error(f"unknown client profile(s) {unknown}; known: {', '.join(PROFILES)}")

    work = workloads(args.quick)
    if args.only:
        names = set(args.only.split(","))
        work = [w for w in work if w.name in names]
    if not args.no_typed:
        for w in work:
            if w.name in ("3d-256", "3d-512"):
                w.systems = (*w.systems, "ours-typed")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "servers.log"
        print(f"building {len(work)} studies ...", flush=True)
        for w in work:
            (tmp / w.name).mkdir()
            write_body(w, tmp / w.name)

        answers = {}  # the floor sends what ours answered
        floor_work = [w for w in work if "floor" in w.systems]
        if floor_work:
            system = start_ours(1, "benchmarks.original_handlers:model", log)
            try:
                for w in floor_work:
                    answers[w.name] = tmp / w.name / "answer.bin"
                    load(system.port, w, 1, 1, save_answer=answers[w.name])
            finally:
                system.stop()

        results: dict[tuple[str, str, str], list[dict]] = {}
        started = time.monotonic()
        for round_index in range(args.rounds):
            order = rotated(work, round_index)
            for w in order:
                for name in rotated(list(w.systems), round_index):
                    system = start_system(name, w, answers, log)
                    try:
                        for profile in rotated([p for p in profiles if not w.profiles or p in w.profiles],
                                               round_index):
                            figures = measure(system, w, profile)
                            results.setdefault((w.name, name, profile), []).append(figures)
                            print(f"round {round_index + 1}/{args.rounds} {w.name:9} {name:10} {profile:8} p50 "
                                  f"{figures['p50']:8.1f} ms {figures['rps']:7.1f} req/s CPU {figures['cpu_ms']:7.1f} "
                                  f"ms/req ({', '.join(f'{r} {v:.1f}' for r, v in figures['cpu_ms_by_role'].items())}) "
                                  f"client {figures['client_cpu_ms']:.1f} errors {figures['errors']} "
                                  f"RSS {figures['rss']} load {figures['load']:.1f}", flush=True)
                    finally:
                        system.stop()
            # After every round, so that a run cut short still leaves its figures.
            write_report(args, work, profiles, results, round_index + 1, (time.monotonic() - started) / 60,
                         final=round_index + 1 == args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
