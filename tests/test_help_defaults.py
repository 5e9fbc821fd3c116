"""Every program's `--help` shows the default of every option that has one.

The options come from each parser; the text from the real `python -m PROGRAM --help` process, run with
none of the WORKER_* / BRIDGE_* variables of the test run (they would change the defaults shown).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

import pytest

from tests.services import ROOT

PROGRAMS = {"worker": "worker.serving.config", "bridge": "bridge.config", "testtool": "testtool.cli",
            "tools.run_local": "tools.run_local"}


def clean_environment() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "BRIDGE_"))}


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_shows_every_default(program, monkeypatch):
    for name in os.environ:
        if name.startswith(("WORKER_", "BRIDGE_")):
            monkeypatch.delenv(name)
    run = subprocess.run([sys.executable, "-m", program, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=clean_environment())
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())  # argparse wraps lines anywhere
    parser = importlib.import_module(PROGRAMS[program]).build_parser()
    checked = 0
    for action in parser._actions:
        default = action.default
        if (action.help == argparse.SUPPRESS or default in (None, False, argparse.SUPPRESS)
                or default == [] or isinstance(action, argparse._HelpAction)):
            continue
        shown = " ".join(str(default).split())
        assert f"default: {shown})" in text, f"{program} --help: {action.option_strings} does not show {default!r}"
        checked += 1
    assert checked >= 3
