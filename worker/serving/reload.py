"""`--reload`: a supervisor that runs the worker as a child process and restarts it when the model changes.

A fresh process is the only reload that is always right: a model's module state, its loaded weights,
C extensions and threads cannot be re-imported in place. The child is the ordinary worker (`python -m
worker ... --no-reload`), so a restart is a SIGTERM (in-flight inferences finish within --grace-seconds;
new calls get UNAVAILABLE, which the bridge answers with 503 and Retry-After) followed by a new start on
the same port, free again as soon as the old process has exited.

Watched: the source files of the top-level package (or module) that --model names, found without
importing it, and everything under --model-dir when it is set. A child that cannot start (a model that
does not import or load, from the first start on: an author often starts --reload on a model they are in
the middle of fixing) leaves the supervisor waiting for the next change. Only a model whose source cannot
be found at all (nothing to watch) ends the supervisor with the child's exit code, 2.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from worker.serving.config import WorkerConfig
from worker.serving.loading import ModelNotFound, use_model_dir
from worker.serving.watch import SourceWatcher

log = logging.getLogger("worker.reload")

POLL_SECONDS = 0.5
SETTLE_SECONDS = 0.2  # an editor's save is often several writes: let them land before restarting
EXIT_CANNOT_START = 2  # worker/__main__.py: bad --model, port in use


def watched_roots(config: WorkerConfig) -> list[Path]:
    """The model's top-level package folder(s) or module file, plus --model-dir when it was set."""
    model_dir = use_model_dir(config.model_dir)
    roots = [model_dir] if config.model_dir not in ("", ".") else []
    top = config.model.partition(":")[0].split(".")[0]
    try:
        spec = importlib.util.find_spec(top) if top else None  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        if spec.submodule_search_locations:
            roots += [Path(location) for location in spec.submodule_search_locations]
        elif spec.origin and spec.has_location:
            roots.append(Path(spec.origin))
    return roots


def supervise(config: WorkerConfig, argv: list[str]) -> int:
    """Runs `python -m worker ARGV --no-reload` until SIGTERM/SIGINT, restarting it on every change."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        roots = watched_roots(config)
    except ModelNotFound as error:
        print(f"worker: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    watcher = SourceWatcher(roots)
    shown = ", ".join(dict.fromkeys(_shown(root) for root in roots)) or "nothing (the model was not found)"
    log.info("reload: watching %s", shown)
    command = [sys.executable, "-m", "worker", *argv, "--no-reload"]
    child: subprocess.Popen | None = subprocess.Popen(command, stderr=sys.stderr)
    restarts = 0
    while not stopping.wait(POLL_SECONDS):
        changed = watcher.changed()
        if changed:
            stopping.wait(SETTLE_SECONDS)
            changed = sorted(set(changed) | set(watcher.changed()))
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            log.info("reload: %s changed%s; restarting the worker", _shown(changed[0]), more)
            _stop(child, config.grace_seconds)
            child = subprocess.Popen(command, stderr=sys.stderr)
            restarts += 1
        elif child is not None and child.poll() is not None:
            if restarts == 0 and child.returncode == EXIT_CANNOT_START and not roots:
                return EXIT_CANNOT_START  # no source of the model was found: no edit can bring it back
            log.warning("reload: the worker %s; waiting for a change to %s to restart it",
                        "could not start (its error is above)" if child.returncode == EXIT_CANNOT_START
                        else f"exited with {child.returncode}", shown)
            child = None
    _stop(child, config.grace_seconds)
    return 0


def _stop(child: subprocess.Popen | None, grace: float) -> None:
    if child is None or child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(grace + 10)
    except subprocess.TimeoutExpired:
        log.warning("reload: the worker did not stop within %.0f s; killing it", grace + 10)
        child.kill()
        child.wait()


def _shown(path: Path) -> str:
    """Relative to the current directory when it is under it, as the author typed it; absolute otherwise."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
