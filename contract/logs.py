"""Logging set-up shared by every entry point, and the tagged logger of the original SDK.

`configure_logging()` loads logging.yaml (dictConfig) before anything else logs. Tags live in a context
variable, so every line logged while a request is handled carries its `input_hash`, `request_id` and
`trace_id` (its W3C trace id, see contract/tracing.py), including lines a model logs through its own
loggers; `RequestTagFilter` (named in logging.yaml) puts them on each record. Each request runs in an
asyncio task of its own (and the model on a thread that gets a copy of that task's context), and every task
has its own context, so tags never leak between concurrent requests.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.config
import os
import uuid
from pathlib import Path

import yaml

# In a checkout this is a link to the repository's logging.yaml (the one to edit); an installed wheel
# carries a copy of it here, so every entry point finds it wherever the packages are installed.
DEFAULT_CONFIG = Path(__file__).with_name("logging.yaml")
TAG_NAMES = ("input_hash", "request_id", "trace_id")
REQUEST_ID_LENGTH = 64

_NO_TAGS: dict = {}  # never mutated: tags are replaced, not updated in place
_tags: contextvars.ContextVar[dict] = contextvars.ContextVar("request_tags", default=_NO_TAGS)  # noqa: B039


def configure_logging(path: str | os.PathLike | None = None, level: str | None = None) -> None:
    """Applies logging.yaml (or $LOGGING_CONFIG); `level` (or $LOG_LEVEL) overrides the root level."""
    config_path = Path(path or os.environ.get("LOGGING_CONFIG") or DEFAULT_CONFIG)
    with open(config_path, encoding="utf-8") as handle:
        logging.config.dictConfig(yaml.safe_load(handle))
    level = level or os.environ.get("LOG_LEVEL")
    if level:
        logging.getLogger().setLevel(level.upper())


class RequestTagFilter(logging.Filter):
    """Adds the current request's tags to every record ('-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        tags = _tags.get()
        for name in TAG_NAMES:
            if not hasattr(record, name):
                setattr(record, name, tags.get(name, "-"))
        return True


def clean_request_id(value: str) -> str:
    """The sender's request id (HTTP X-Request-Id, or the bridge's id in gRPC metadata) if it is short
    printable ASCII without spaces, else a new one: it is copied into log lines and metadata, which must not
    be forgeable or broken by it."""
    if value and len(value) <= REQUEST_ID_LENGTH and value.isascii() and value.isprintable() and " " not in value:
        return value
    return uuid.uuid4().hex[:12]


def current_tags() -> dict:
    return dict(_tags.get())


def set_tags(**tags: str) -> None:
    """Adds tags for the rest of the current request (e.g. the input hash once it is known)."""
    _tags.set({**_tags.get(), **{k: v for k, v in tags.items() if v}})


@contextlib.contextmanager
def request_tags(**tags: str):
    """Tags every line logged inside the block; restores the previous tags afterwards."""
    token = _tags.set({**_tags.get(), **{k: v for k, v in tags.items() if v}})
    try:
        yield
    finally:
        _tags.reset(token)


class TaggedLogger(logging.LoggerAdapter):
    """The original SDK's `tagged_logger.TaggedLogger(logger)` with `add_tags({...})`, kept for ported models."""

    def __init__(self, logger: logging.Logger, tags: dict | None = None) -> None:
        super().__init__(logger, dict(tags or {}))

    def add_tags(self, tags: dict) -> None:
        self.extra.update(tags)

    def process(self, msg, kwargs):
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}
        return msg, kwargs
