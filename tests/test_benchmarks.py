"""`make bench` cannot rot: a tiny run of the comparison (reference, ours, floor; both client profiles) through
real processes, checking the report it writes. Figures are not judged here (timed tests lie on a shared machine)."""

from __future__ import annotations

import subprocess
import sys

from tests.services import ROOT


def test_a_tiny_comparison_runs_every_system_with_both_clients_and_writes_its_report(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--rounds", "1", "--only", "bbox-8,3d-64",
         "--no-typed", "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = report.read_text()
    for system in ("reference", "ours", "floor"):
        for workload in ("bbox-8", "3d-64"):
            for client in ("lean", "toolbelt"):
                row = next((line for line in text.splitlines()
                            if line.startswith(f"| {workload} | {system} | {client} |")), None)
                assert row is not None, f"no row for {workload}/{system}/{client}"
                cells = [cell.strip() for cell in row.strip("|").split("|")]
                assert cells[6] == "0", f"{workload}/{system}/{client} had errors: {row}"  # errors column
    for client in ("lean", "toolbelt"):
        assert f"] {client}: 3D-64 latency at most 0.8x the reference" in text, f"no 3D-64 target for {client}"
    assert "## Legend" in text and "CPU/req" in text and "Machine:" in text and "load average" in text


def test_a_tiny_batching_run_writes_its_table_and_target(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--rounds", "1", "--only", "gpu-1x32,gpu-8x32",
         "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = report.read_text()
    batching = text.split("### Batching", 1)[1].split("## Legend", 1)[0]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")]
            for line in batching.splitlines() if line.startswith("| gpu-")}
    assert set(rows) == {"gpu-1x32", "gpu-8x32"}
    assert rows["gpu-1x32"][4] == rows["gpu-8x32"][4] == "0"  # errors
    assert float(rows["gpu-8x32"][5]) > 0 and rows["gpu-1x32"][5] == ""  # req/s against batches of one
    assert "GPU stand-in at 32 clients, batches of up to 8: at least 4x the req/s" in text
