"""`make lint` (ruff, pinned in requirements-dev.txt, configured in pyproject.toml) is part of the suite, so
a style or import mistake fails CI like any other defect."""

from __future__ import annotations

import subprocess
import sys

from tests.services import ROOT


def test_ruff_finds_nothing():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
