"""`make bench` cannot rot: a tiny run of the comparison (reference, ours, floor) through real processes,
checking the report it writes. Figures are not judged here (timed tests lie on a shared machine)."""

from __future__ import annotations

import subprocess
import sys

from tests.services import ROOT


def test_a_tiny_comparison_runs_every_system_and_writes_its_report(tmp_path):
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
            row = next((line for line in text.splitlines() if line.startswith(f"| {workload} | {system} |")), None)
            assert row is not None, f"no row for {workload}/{system}"
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert cells[5] == "0", f"{workload}/{system} had errors: {row}"  # errors column
    assert "## Legend" in text and "CPU/req" in text and "Machine:" in text
