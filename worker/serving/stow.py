"""Sends an answer's DICOM objects to a PACS over DICOMweb (STOW-RS), after the viewer has its answer.

Off unless --stow-url names a DICOMweb service (the objects are POSTed to <url>/studies). Why the worker:
it made the objects and holds them; the bridge stays a thin protocol front that never reads DICOM. Why
after the answer: storing is a copy for the archive, so it never delays or fails the viewer's answer. Each
answer is one job on a thread of its own, tried up to --stow-retries more times (1, 2, 4... s apart) on a
connection error, a timeout or a 5xx/408/429 answer; a 4xx is final. At most MAX_PENDING answers wait for
it; beyond that the newest is not stored (logged, counted), so an unreachable PACS never fills the worker's
memory. `worker_stow_requests{outcome}` counts stored, failed and dropped answers,
`worker_stow_attempts{status}` every POST. Every log line carries the request's tags (its input hash,
request id), never a patient value.

Authentication: a bearer token (--stow-token-file) or HTTP basic (--stow-basic-auth-file, "user:password"),
read from files so that no secret is on a command line; TLS checked against --stow-ca-file (or the system's
CAs).
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arterys_http.protocol import DICOM_TYPES
from service_runtime.settings import setting

log = logging.getLogger("worker.stow")

MAX_PENDING = 16  # answers waiting to be stored; more are dropped (with an ERROR line)
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
FIRST_BACKOFF = 1.0


@dataclass(frozen=True)
class StowConfig:
    """A branch of the worker's settings tree (worker/serving/config.py): the flags --stow-*."""

    GROUP = "storing the DICOM outputs to a PACS (STOW-RS, docs/dicom-outputs.md)"
    FLAG_PREFIX = "stow-"

    url: str = setting("", "DICOMweb base URL: every answer's DICOM objects are also POSTed to <url>/studies after "
                           "the viewer has its answer; empty: off")  # e.g. https://pacs.example/dicom-web
    token_file: str = setting("", "file holding a bearer token for --stow-url")
    basic_auth_file: str = setting("", "file holding user:password for HTTP basic authentication to --stow-url")
    ca_file: str = setting("", "PEM CA certificate(s) that --stow-url's TLS certificate must chain to (default: "
                               "the system's)")
    retries: int = setting(3, "further attempts after a failed store (connection error, timeout, 5xx, 408, 429)")
    timeout_seconds: float = setting(30.0, "time allowed for one store request")

    def headers(self) -> dict[str, str]:
        if self.token_file:
            return {"Authorization": f"Bearer {Path(self.token_file).read_text().strip()}"}
        return {}

    def auth(self) -> tuple[str, str] | None:
        if not self.basic_auth_file:
            return None
        user, _, password = Path(self.basic_auth_file).read_text().strip().partition(":")
        return user, password


def check(parser: argparse.ArgumentParser, config: StowConfig) -> None:
    """An unreadable file, or one given without --stow-url, is a usage error at start."""
    if config.token_file and config.basic_auth_file:
        parser.error("--stow-token-file and --stow-basic-auth-file: give one")
    for flag, path in (("--stow-token-file", config.token_file), ("--stow-basic-auth-file", config.basic_auth_file),
                       ("--stow-ca-file", config.ca_file)):
        if path and not os.access(path, os.R_OK):
            parser.error(f"{flag} {path}: cannot read it")
        if path and not config.url:
            parser.error(f"{flag} needs --stow-url")
    if config.url and not config.url.startswith(("http://", "https://")):
        parser.error(f"--stow-url must be an http:// or https:// URL, got {config.url[:60]!r}")


def dicom_objects(result_json: dict, binaries: Sequence) -> list:
    """The answer's DICOM objects: every part whose binary is a DICOM file (exported or the model's own)."""
    return [binary for part, binary in zip(result_json.get("parts") or [], binaries, strict=False)
            if part.get("binary_type") in DICOM_TYPES]


class StowSender:
    """Stores answers' DICOM objects on a thread of its own; `submit` never blocks."""

    def __init__(self, config: StowConfig, metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._jobs: queue.Queue = queue.Queue(MAX_PENDING)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stow", daemon=True)
        self._thread.start()

    def submit(self, objects: Sequence) -> None:
        """Queues one answer's objects (memoryviews are kept, not copied), in the caller's log context."""
        if not objects:
            return
        try:
            self._jobs.put_nowait((contextvars.copy_context(), list(objects)))
        except queue.Full:
            self.metrics.stow_requests.labels("dropped").inc()
            log.error("STOW-RS: %d answers are already waiting for %s; this answer's %d object(s) are not stored",
                      MAX_PENDING, self.config.url, len(objects))

    def close(self, timeout: float = 5.0) -> None:
        """Stops after the job under way (waiting at most `timeout`); answers still queued are not stored."""
        self._closed.set()
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        import requests  # only a worker that stores anything loads it

        session = requests.Session()
        while True:
            job = self._jobs.get()
            if job is None or self._closed.is_set():
                return
            context, objects = job
            context.run(self._store, session, objects)

    def _store(self, session, objects: list) -> None:
        import requests

        boundary = uuid.uuid4().hex
        body = b"".join(b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), bytes(o))
                        for o in objects) + b"--%s--\r\n" % boundary.encode()
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json", **self.config.headers()}
        url = self.config.url.rstrip("/") + "/studies"
        delay = FIRST_BACKOFF
        for attempt in range(self.config.retries + 1):
            started = time.monotonic()
            try:
                response = session.post(url, data=body, headers=headers, auth=self.config.auth(),
                                        verify=self.config.ca_file or True, timeout=self.config.timeout_seconds)
                status, reason = str(response.status_code), f"HTTP {response.status_code}"
            except requests.RequestException as error:
                response, status, reason = None, "error", f"{type(error).__name__}"
            self.metrics.stow_attempts.labels(status).inc()
            if response is not None and response.status_code in (200, 202):
                self.metrics.stow_requests.labels("stored").inc()
                log.info("STOW-RS: %d object(s) stored to %s (%s, %.2f s, attempt %d)", len(objects), url, reason,
                         time.monotonic() - started, attempt + 1)
                return
            final = response is not None and response.status_code not in RETRY_STATUSES
            if final or attempt == self.config.retries or self._closed.is_set():
                self.metrics.stow_requests.labels("failed").inc()
                log.error("STOW-RS: %d object(s) not stored to %s: %s after %d attempt(s)", len(objects), url,
                          reason, attempt + 1)
                return
            log.warning("STOW-RS: %s from %s; trying again in %.0f s", reason, url, delay)
            if self._closed.wait(delay):
                return
            delay *= 2
