"""Names a viewer shows for the outputs: Series Number, Series Description, Content Label, creator, within
their Value Representation's limits.

Why: a PACS lists the outputs of every run of every model beside the scanner's series. A fixed Series Number
and one description for all made five runs on a study look like five copies of one series; here each output
series gets a new number (later runs, higher numbers) and a description naming model, command and labels.
"""

from __future__ import annotations

import re
import threading
import time

from worker.serving.dicom_export.vr import cut_text, size

# Series Numbers: seconds since this date when the worker starts, then one more for each output series, so
# numbers are distinct within a worker and grow with time across workers and restarts (IS allows up to
# 2**31 - 1: seconds since 2024 reach it in 2092).
EPOCH = 1704067200  # 2024-01-01T00:00:00Z


class SeriesNumbers:
    """A process-wide counter: never the same number twice in one worker, never behind the clock."""

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()  # exports of several requests run on several threads

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(self._clock()) - EPOCH)
            return self._last


SERIES_NUMBERS = SeriesNumbers()


def listing(labels: list[str], limit: int) -> str:
    """'a, b, c' within `limit` characters, the labels left out counted: 'a, b +3 more'. A LO value: no
    backslash (DICOM's value separator)."""
    labels = [label.replace("\\", "/") for label in labels]
    text = ", ".join(labels)
    if size(text) <= limit:
        return text
    for kept in range(len(labels) - 1, 0, -1):
        text = ", ".join(labels[:kept]) + f" +{len(labels) - kept} more"
        if size(text) <= limit:
            return text
    return cut_text(labels[0], limit)


def description(model: str, command: str, labels: list[str], kind: str = "", limit: int = 64) -> str:
    """Series Description (LO): '<model> <command> <kind>: <labels>' (kind: which report, for an SR); the
    labels are cut first, never the model."""
    head = " ".join(part for part in (model, command, kind) if part).replace("\\", "/")
    room = limit - size(head) - 2
    if room < 8:
        return cut_text(head, limit)
    return f"{head}: {listing(labels, room)}" if labels else cut_text(head, limit)


def content_label(labels: list[str]) -> str:
    """Content Label (CS: A-Z, 0-9, space, underscore; 16 characters): the labels' words, cut between words
    so that it still reads as what the segments are ('MOCK BOOLEAN', not 'MOCK BOOLEAN_MAS')."""
    words = re.sub(r"[^A-Z0-9]+", " ", " ".join(labels).upper()).split()
    text = ""
    for word in words:
        candidate = f"{text} {word}".strip()
        if len(candidate) > 16:
            break
        text = candidate
    if not text and words:
        text = words[0][:16]  # one word longer than CS allows: its start
    return text or "SEGMENTATION"


def person_name(text: str) -> str:
    """A PN holding a device's name: one family-name component (a trailing '^' says so), 64 characters."""
    return cut_text(re.sub(r"[\\=^]", " ", text).strip() or "unnamed", 63) + "^"
