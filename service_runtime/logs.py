"""Logging set-up shared by every entry point, and the tagged logger of the original SDK.

`configure_logging()` loads logging.yaml (dictConfig) before anything else logs. Tags live in a context
variable, so every line logged while a request is handled carries its `input_hash`, `request_id` and
`trace_id` (its W3C trace id, see service_runtime/tracing.py), including lines a model logs through its own
loggers; `RequestTagFilter` (named in logging.yaml) puts them on each record. Each request runs in an
asyncio task of its own (and the model on a thread that gets a copy of that task's context), and every task
has its own context, so tags never leak between concurrent requests.

Every line goes through `OneLineFormatter`: control characters are escaped, so one record is one line and no
value a request carries (a patient name with a line break) can start a line that looks like another
record. Python `warnings` (pydicom's, highdicom's) and uncaught exceptions of any thread become records
too, and the services route what native code writes to stderr (gRPC's C core) through the same handler
(service_runtime/native_log.py). `StudyDataFilter` keeps study values out of the DICOM libraries' records,
and the identifiers of the study a request carries (`StudyNames`: its file names, its UIDs) out of every record
logged while the request is handled.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import logging.config
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

# In a checkout this is a link to the repository's logging.yaml (the one to edit); an installed wheel
# carries a copy of it here, so every entry point finds it wherever the packages are installed.
DEFAULT_CONFIG = Path(__file__).with_name("logging.yaml")
TAG_NAMES = ("input_hash", "request_id", "trace_id")
REQUEST_ID_LENGTH = 64

_NO_TAGS: dict = {}  # never mutated: tags are replaced, not updated in place
_tags: contextvars.ContextVar[dict] = contextvars.ContextVar("request_tags", default=_NO_TAGS)  # noqa: B039
_study_names: contextvars.ContextVar[StudyNames | None] = contextvars.ContextVar("study_names", default=None)


MAX_RECORD_CHARACTERS = 64 << 10  # a record longer than this (a model logging a whole array) is cut
# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators some viewers break on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def configure_logging(path: str | os.PathLike | None = None, level: str | None = None,
                      native_output: bool = False) -> None:
    """Applies logging.yaml (or $LOGGING_CONFIG); `level` (or $LOG_LEVEL) overrides the root level.

    Python warnings and uncaught exceptions become log records. With `native_output` (the services, not
    tests or libraries) what native code writes to file descriptor 2 is read back and logged as well."""
    if native_output:
        from service_runtime.native_log import route_native_stderr

        route_native_stderr()  # first: the handler below must write to the real stderr, not to the pipe
    config_path = Path(path or os.environ.get("LOGGING_CONFIG") or DEFAULT_CONFIG)
    with open(config_path, encoding="utf-8") as handle:
        logging.config.dictConfig(yaml.safe_load(handle))
    level = level or os.environ.get("LOG_LEVEL")
    if level:
        logging.getLogger().setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn(...) of any library: logger "py.warnings"
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback,
                                                      args.thread.name if args.thread else "?")


def _log_uncaught(exc_type, value, traceback, thread: str = "MainThread") -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, value, traceback)
        return
    logging.getLogger("uncaught").critical("uncaught exception in thread %s", thread,
                                           exc_info=(exc_type, value, traceback))


def escape_controls(text: str) -> str:
    """`text` on one line: line breaks and every other control character written as escapes."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match) -> str:
    code = ord(match[0])
    return _ESCAPES.get(match[0]) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


# Loggers of the DICOM libraries and of Python warnings, whose messages may quote a value of the study.
STUDY_DATA_LOGGERS = ("pydicom", "highdicom", "py.warnings")
# A quoted value: the quote opens after a non-word character (not the apostrophe of "model's") and closes
# before one.
_QUOTED = re.compile(r"""(?<!\w)(['"])(.*?)\1(?!\w)""", re.DOTALL)


def hide_values(text: str) -> str:
    """`text` with every quoted value replaced by its length: what DICOM libraries quote is study data (a
    patient's name, an ID, a description), and no patient identifier may reach a log."""
    return _QUOTED.sub(lambda match: f"<{len(match[2])} characters>", text)


# A DICOM UID as it appears in a text: numbers joined by dots. Looked up whole, so that a UID is never taken
# for the prefix of a longer one.
_UID_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)+")
MIN_NAME_CHARACTERS = 4  # shorter values ("1", "ct") are not identifying, and replacing them would garble lines
# What StudyNames.add_source takes: called with the StudyNames, it yields (value, name) pairs to add.
Source = Callable[["StudyNames"], Iterable[tuple[object, str]]]


class StudyNames:
    """The identifying values of one request's study, each with the name a log line uses instead: a part's file
    name becomes <file name of part 3>, an instance's SOP Instance UID <SOP Instance UID of part 3>.

    Patients' names are often in file and folder names, and UIDs identify a patient's study: the client may see
    them in its answers (it sent them), logs must not. Messages of ours name parts by number; this catches what
    they cannot: text of a model's (its exceptions, its own log lines) or of a library, logged while the request
    is handled. The worker adds values as parts arrive, on the event loop and on I/O threads (hence the lock);
    `StudyDataFilter` replaces them in every record logged in the request's context (`study_names_scope`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uids: dict[str, str] = {}  # values written as UIDs: replaced where a whole UID-like word matches
        self._texts: dict[str, str] = {}  # any other value (a file name): replaced where it is a whole word
        self._longest_first: list[tuple[str, str]] | None = []
        self._patterns: dict[str, re.Pattern] = {}
        self._noted: set = set()
        # Sources not read yet, oldest first; one leaves only once its values are added, so that whoever finds
        # none left knows every value given so far is here.
        self._sources: collections.deque[Source] = collections.deque()
        self._reading = threading.RLock()  # one thread reads the sources; the others wait for its values
        self._reading_now = False  # set by the thread holding _reading (re-entered when a source logs a warning)

    def add(self, value, name: str) -> None:
        """Hides `value` (if it has MIN_NAME_CHARACTERS or more) as <name> from now on; the first name given to
        a value stays."""
        value = str(value or "").strip()
        if len(value) < MIN_NAME_CHARACTERS:
            return
        with self._lock:
            if _UID_TEXT.fullmatch(value):
                self._uids.setdefault(value, name)
            elif value not in self._texts:
                self._texts[value] = name
                self._longest_first = None

    def add_source(self, source: Source) -> None:
        """Values that cost time to find (those of an instance's header), found only when first needed: `source`
        is called with this StudyNames the first time a record is checked or a batch's names are read, and each
        (value, name) it yields is added as `add` does. Most calls log nothing while they are handled, and
        then nothing is found at all. Values added directly are in place at once: a value both added and given
        by a source keeps the name it was added with. `source` must not log; what a library warns while it
        runs is checked with the values found so far."""
        with self._lock:
            self._sources.append(source)

    def noted_before(self, key) -> bool:
        """Whether `key` was given here before (it is noted now): lets a source skip the work of finding the
        values of a part when an earlier part had the same (a study's parts share most of theirs)."""
        with self._lock:
            if key in self._noted:
                return True
            self._noted.add(key)
            return False

    def values(self) -> list[tuple[str, str]]:
        """Every (value, name) given so far, the sources' included."""
        self._read_sources()
        with self._lock:
            return [*self._uids.items(), *self._texts.items()]

    @classmethod
    def joined(cls, each: Iterable[StudyNames | None]) -> StudyNames:
        """One StudyNames holding the values of several (a batch of studies, which the model sees at once). Each
        one's values are read, its sources with them, when the joined one's are first needed."""
        joined = cls()
        for names in each:
            if names is not None:
                joined.add_source(lambda _, names=names: names.values())
        return joined

    def __bool__(self) -> bool:
        # Without reading the sources: one not read yet may hold values, and `replace` reads it.
        return bool(self._sources or self._uids or self._texts)

    def _read_sources(self) -> None:
        if not self._sources:  # none left: every source added before has its values in place
            return
        with self._reading:
            if self._reading_now:  # a source's own warning, checked in its thread: with the values so far
                return
            self._reading_now = True
            try:
                while self._sources:
                    try:
                        for value, name in self._sources[0](self):
                            self.add(value, name)
                    except Exception as error:  # a source's bug must not break the logging call that needed it
                        logging.getLogger(__name__).error("a source of a request's study identifiers failed (%s); "
                                                          "its other values are not hidden", type(error).__name__)
                    self._sources.popleft()
            finally:
                self._reading_now = False

    def replace(self, text: str) -> str:
        """`text` with every value given so far (the sources' included) replaced by its name."""
        self._read_sources()
        with self._lock:
            if self._longest_first is None:  # a longer value first: a name may hold a shorter one
                self._longest_first = sorted(self._texts.items(), key=lambda item: -len(item[0]))
            texts, uids = self._longest_first, self._uids
        for value, name in texts:
            if value in text:  # cheap: the pattern is made and run only for a value that occurs
                text = self._pattern(value).sub(lambda _, name=name: f"<{name}>", text)
        if uids:
            text = _UID_TEXT.sub(lambda match: f"<{uids[match[0]]}>" if match[0] in uids else match[0], text)
        return text

    def _pattern(self, value: str) -> re.Pattern:
        """`value` as a whole word: not inside a longer one ("data" is a folder's name, not part of "metadata")."""
        pattern = self._patterns.get(value)
        if pattern is None:
            pattern = self._patterns[value] = re.compile(rf"(?<![^\W_]){re.escape(value)}(?![^\W_])")
        return pattern


def as_study_data(text: str) -> str:
    """`text` as a record marked study data shows it here: quoted values hidden, the current request's study
    identifiers replaced. For what leaves by another way than a log (an exception recorded on a trace span)."""
    names = _study_names.get()
    return names.replace(hide_values(text)) if names else hide_values(text)


def current_study_names() -> StudyNames | None:
    """The StudyNames of the request being handled (None outside one)."""
    return _study_names.get()


def use_study_names(names: StudyNames | None) -> None:
    """Sets the StudyNames of the current context (a batch's, made with StudyNames.joined)."""
    _study_names.set(names)


@contextlib.contextmanager
def study_names_scope():
    """Gives the block (a request's handling, and the threads and tasks it starts, which copy its context) a
    new StudyNames, and yields it."""
    names = StudyNames()
    token = _study_names.set(names)
    try:
        yield names
    finally:
        _study_names.reset(token)


class StudyDataFilter(logging.Filter):
    """Hides quoted values (hide_values) in the records of the DICOM libraries, of Python warnings, and of any
    record logged with `extra={"study_data": True}` (an exception text that came from them), traceback
    included; and in every record logged while a request is handled, the identifiers of its study
    (StudyNames)."""

    def filter(self, record: logging.LogRecord) -> bool:
        hide = getattr(record, "study_data", False) or record.name.startswith(STUDY_DATA_LOGGERS)
        names = _study_names.get()
        if not hide and not names:
            return True
        steps = [step for step in (hide_values if hide else None, names.replace if names else None) if step]
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for step in steps:
            message = step(message)
            if record.exc_text:
                record.exc_text = step(record.exc_text)
        record.msg, record.args = message, None
        return True


class OneLineFormatter(logging.Formatter):
    """logging.Formatter, then one line per record: control characters escaped (tracebacks included, their
    line breaks as \\n), at most MAX_RECORD_CHARACTERS."""

    def format(self, record: logging.LogRecord) -> str:
        text = escape_controls(super().format(record))
        if len(text) > MAX_RECORD_CHARACTERS:
            text = text[:MAX_RECORD_CHARACTERS] + f"... ({len(text):,} characters, cut)"
        return text


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
