#!/usr/bin/env bash
# Sends a study to an Arterys-protocol inference service, checks the answer and draws it:
#   testtool/send-inference-request.sh -i STUDY_DIR [--host HOST] [-p PORT] [-o OUT_DIR] [-c COMMAND] ...
# Every argument goes unchanged to `python -m testtool` (run with -h for the flags). Works from any
# directory: relative paths in the arguments are taken from the caller's directory, as with the
# original tool. Uses the repository's .venv when it exists, else python3 from PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
if [ ! -x "$python" ]; then
    python="python3"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m testtool "$@"
