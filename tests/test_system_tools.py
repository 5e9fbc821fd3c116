"""tools/system-tools.txt and what `make test` does with it: install what is missing, or say what is, and end
a run whose tests lacked a program with one list and the command that installs it (and a failure)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

from tests.services import ROOT
from tools import system_tools

NO_PROGRAMS = {**os.environ, "PATH": "/nonexistent"}  # no apt-get, no sudo, no listed program


def test_every_listed_tool_names_a_package_and_the_tests_that_run_it():
    listed = system_tools.tools()
    assert {"prometheus", "promtool", "chromium", "chromedriver", "dciodvfy"} <= {t.command for t in listed}
    for tool in listed:
        pattern = tool.used_by.partition(":")[0]
        assert glob.glob(str(ROOT / pattern)), f"{tool.command}: {pattern} matches no test file"
        assert tool.package and tool.package.islower()


def test_install_without_apt_says_what_is_missing_and_how_to_install_it():
    result = subprocess.run([sys.executable, "tools/system_tools.py", "install"], cwd=ROOT, env=NO_PROGRAMS,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr  # the tests still run: those needing a program fail
    # Files (a plugin) are looked for where they are, whatever PATH says: those present are not missing.
    packages = " ".join(dict.fromkeys(t.package for t in system_tools.tools()
                                      if not (os.path.isabs(t.command) and os.path.exists(t.command))))
    assert "missing and not installed (no apt-get here)" in result.stderr, result.stderr
    assert f"Install them with: sudo apt-get install -y {packages}" in result.stderr, result.stderr


def test_a_run_missing_a_program_fails_and_ends_with_one_list_and_the_install_command():
    test = "tests/test_prometheus_rules.py::test_prometheus_binary_runs"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test], cwd=ROOT,
                            env=NO_PROGRAMS, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout
    summary = result.stdout.partition("system tools missing")[2]
    assert "1 test(s) did not run:" in summary, result.stdout
    assert "not run: 1 test(s) of tests/test_prometheus_rules.py" in summary
    assert "Install them: sudo apt-get install -y " in summary and "prometheus" in summary
    assert "1 failed" in result.stdout and "skipped" not in result.stdout
