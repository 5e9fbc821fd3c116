"""Keeps the worker's logging as logging.yaml set it while a model's own code runs (its import, its load()).

Handler modules of the original SDK configure logging themselves at import, as its README told them to:
`logging.config.dictConfig(yaml.safe_load(open('logging.yaml')))`. That file has no
`disable_existing_loggers: false`, so dictConfig disables every logger that already exists (the worker's
and gRPC's among them) and replaces the root logger's handlers and level: the worker's log went silent,
errors included, and nothing said why. Around the model's code the worker notes its loggers' state and puts
back whatever the model changed: the root logger's handlers and level and every logger that existed before
(its `disabled` flag, level, handlers, propagation). Loggers the model created itself keep the model's
configuration, and those without handlers of their own log through the worker's root handler, in the
worker's format, with each request's tags (input_hash, request_id, trace_id).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger("worker")
OWN_LOGGERS = ("worker", "grpc")


def _state(logger: logging.Logger) -> tuple:
    return logger.disabled, logger.level, list(logger.handlers), logger.propagate, list(logger.filters)


def _existing() -> dict[str, logging.Logger]:
    loggers = {name: value for name, value in logging.root.manager.loggerDict.items()
               if isinstance(value, logging.Logger)}  # PlaceHolders are not loggers yet
    return {"": logging.root, **loggers}


@contextlib.contextmanager
def worker_logging_kept(what: str) -> Iterator[None]:
    """Runs the block (the model's code, described by `what`) and undoes its changes to existing loggers."""
    before = {name: (logger, _state(logger)) for name, logger in _existing().items()}
    disabled_level = logging.root.manager.disable
    try:
        yield
    finally:
        root_changed, disabled, other = False, [], []
        for name, (logger, state) in before.items():
            now = _state(logger)
            if now == state:
                continue
            if not name:
                root_changed = True
            elif now[0] and not state[0]:
                disabled.append(name)
            else:
                other.append(name)
            logger.disabled, logger.level, logger.handlers[:], logger.propagate, logger.filters[:] = state
        changes = (["replaced the root logger's handlers or level"] if root_changed else []) + (
            [f"disabled {len(disabled)} logger(s) that existed ({_names(disabled)})"] if disabled else []) + (
            [f"changed {len(other)} other logger(s) ({_names(other)})"] if other else [])
        if logging.root.manager.disable != disabled_level:
            changes.append("called logging.disable()")
            logging.disable(disabled_level)
        if changes:
            log.warning("the model's %s reconfigured logging: it %s. The worker's logging (logging.yaml) is put back "
                        "and the model's loggers log through it (LOG_LEVEL=DEBUG shows their debug lines)",
                        what, "; ".join(changes))


def _names(names: list[str]) -> str:
    """The worker's own loggers first: the ones whose silence was noticed."""
    def rank(name: str) -> tuple:
        top = name.split(".")[0]
        return (OWN_LOGGERS.index(top) if top in OWN_LOGGERS else len(OWN_LOGGERS), name)

    ordered = sorted(names, key=rank)
    return ", ".join(ordered[:3]) + (", ..." if len(ordered) > 3 else "")
