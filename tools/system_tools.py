"""The system programs the tests run (tools/system-tools.txt): which are missing, and installing them.

`python3 tools/system_tools.py install` is `make system-tools`, called by `make test`: on Debian or Ubuntu,
as root or with sudo, it says which packages it is about to install and runs apt-get; anywhere else it
says what is missing and how to install it, and returns 0 all the same, so that `make test` still runs
every test it can (those needing a missing program fail, and tests/system_tools.py lists them at the end).
Standard library only: it runs before .venv exists, with the system's python3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).with_name("system-tools.txt")


@dataclass(frozen=True)
class Tool:
    command: str
    package: str  # Debian's (and Ubuntu's)
    used_by: str


def tools(path: Path = LIST) -> list[Tool]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            command, package, used_by = line.split(maxsplit=2)
            found.append(Tool(command, package, used_by))
    return found


def find(command: str) -> str | None:
    """The program's path: beside this Python first (a program a pinned wheel installs into .venv/bin),
    then on PATH; an absolute path (a plugin file) when it exists."""
    if os.path.isabs(command):
        return command if os.path.exists(command) else None
    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(command)


def missing(listed: list[Tool] | None = None) -> list[Tool]:
    return [tool for tool in (tools() if listed is None else listed) if find(tool.command) is None]


def packages(needed: list[Tool]) -> list[str]:
    return list(dict.fromkeys(tool.package for tool in needed))


def install_command(needed: list[Tool]) -> str:
    """What a person runs to install them (the same apt-get `make system-tools` runs)."""
    return f"sudo apt-get install -y {' '.join(packages(needed))}  (Debian/Ubuntu; or: sudo make system-tools)"


def _privilege() -> list[str] | None:
    """[] as root, ["sudo"] when sudo can be used, None when neither."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        return None
    if sys.stdin.isatty():
        return ["sudo"]  # it may ask for the password: the line printed before says why
    usable = subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    return ["sudo", "-n"] if usable else None


def install() -> int:
    needed = missing()
    if not needed:
        return 0
    names = ", ".join(tool.command for tool in needed)
    privilege = _privilege() if shutil.which("apt-get") else None
    if privilege is None or os.environ.get("INSTALL_SYSTEM_TOOLS", "1") == "0":
        why = ("INSTALL_SYSTEM_TOOLS=0" if os.environ.get("INSTALL_SYSTEM_TOOLS") == "0"
               else "no apt-get here" if not shutil.which("apt-get") else "neither root nor sudo")
        print(f"system tools: {names} missing and not installed ({why}); the tests that run them will fail.\n"
              f"  Install them with: {install_command(needed)}", file=sys.stderr)
        return 0
    who = "as root" if not privilege else "with sudo"
    print(f"system tools: installing {' '.join(packages(needed))} with apt-get {who}, for the tests that run "
          f"{names} (tools/system-tools.txt; INSTALL_SYSTEM_TOOLS=0 skips this)", file=sys.stderr, flush=True)
    environment = ["env", "DEBIAN_FRONTEND=noninteractive"]
    steps = [[*privilege, "apt-get", "update", "-q"],
             [*privilege, *environment, "apt-get", "install", "-y", "-q",
              *packages(needed)]]
    for step in steps:
        if subprocess.run(step, check=False).returncode != 0:
            print(f"system tools: `{' '.join(step)}` failed; the tests that run {names} will fail.\n"
                  f"  Install them with: {install_command(needed)}", file=sys.stderr)
            return 0
    still = missing()
    if still:
        print(f"system tools: still missing after apt-get: {', '.join(t.command for t in still)}",
              file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["install"]:
        return install()
    if argv[1:] == ["missing"]:
        for tool in missing():
            print(f"{tool.command}\t{tool.package}\t{tool.used_by}")
        return 0
    print("usage: python3 tools/system_tools.py install|missing", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
