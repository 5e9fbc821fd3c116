"""The tests' side of tools/system-tools.txt: `require` fails a test whose program is missing, and the
run's summary ends with one list of them and the command that installs them (`summary_lines`, called by
conftest.py's pytest_terminal_summary). A test never passes or skips for want of a program."""

from __future__ import annotations

import pytest

from tools import system_tools

MARK = "system tool missing:"  # starts every such failure; the summary finds them by it


def require(*commands: str) -> list[str]:
    """The paths of COMMANDS (each listed in tools/system-tools.txt); fails the test naming the missing ones."""
    listed = {tool.command: tool for tool in system_tools.tools()}
    unknown = [command for command in commands if command not in listed]
    assert not unknown, f"add {unknown} to tools/system-tools.txt"
    needed = [listed[command] for command in commands if system_tools.find(command) is None]
    if needed:
        pytest.fail(f"{MARK} {', '.join(t.command for t in needed)}. Install: "
                    f"{system_tools.install_command(needed)}", pytrace=False)
    return [system_tools.find(command) for command in commands]


def summary_lines(failed_reports) -> list[str]:
    """One block for the whole run: the tests not run for want of a program, and how to install them all."""
    tests = [report.nodeid for report in failed_reports if MARK in (report.longreprtext or "")]
    if not tests:
        return []
    needed = system_tools.missing()
    lines = [f"{len(tests)} test(s) did not run: {', '.join(t.command for t in needed) or 'a program'} "
             "missing (tools/system-tools.txt):"]
    lines += [f"  {tool.command} ({tool.package}): {tool.used_by}" for tool in needed]
    by_file: dict[str, int] = {}
    for nodeid in tests:
        by_file[nodeid.partition("::")[0]] = by_file.get(nodeid.partition("::")[0], 0) + 1
    lines += [f"  not run: {count} test(s) of {path}" for path, count in by_file.items()]
    if needed:
        lines.append(f"Install them: {system_tools.install_command(needed)}, then run make test again.")
    return lines
