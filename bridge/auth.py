"""Bearer-token authentication of the bridge's HTTP requests (optional: off when no token is configured).

Tokens come from BRIDGE_TOKENS (comma or whitespace separated) and/or a file (--token-file: one or more
per line, `#` starts a comment). Several are valid at once, so a token is rotated by adding the new one,
moving clients over, then removing the old one. The file is read again when it changes (checked at most
once a second, on requests) and is *complete*, and on SIGHUP; a file that cannot be read keeps the tokens it
had. Complete means: unchanged while it was read, and ending with a line break or unchanged for
SETTLE_SECONDS. So a file caught half-written (`tok-ne`, the rest a second later) keeps the tokens in use
instead of accepting the fragment, and a file truncated before it is rewritten does not refuse everyone
meanwhile. Replacing the file atomically (write another file in the same folder, then rename it over this
one, as Kubernetes does for a Secret volume) never shows a partial file at all.

Only SHA-256 digests of the tokens are kept, and a presented token is compared, in constant time, with
every one of them (no early exit): neither its value nor which token matched leaks through timing.
Digests also give every comparison the same length, which hmac.compare_digest needs to hide lengths.
Tokens never reach a log line; counts and the file's name do.

The routes the Arterys app and orchestrators probe stay open (they reveal readiness only), and so does
/metrics unless --metrics-auth is on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time

from bridge import errors
from bridge.http import Request

log = logging.getLogger("bridge.auth")

REALM = "arterys-bridge"
OPEN_PATHS = frozenset({"/healthcheck", "/ping", "/healthz", "/readyz"})
RECHECK_SECONDS = 1.0
SETTLE_SECONDS = 5.0  # a token file without a final line break counts as complete once unchanged this long
SHORT_TOKEN = 16  # characters; shorter ones are accepted with a warning
_SEPARATORS = re.compile(r"[\s,]+")


class AuthConfigError(ValueError):
    """The token file cannot be read at start-up."""


class Incomplete(Exception):
    """The token file is being written: read it again later."""


class Unauthorized(errors.ApiError):
    """401 with the WWW-Authenticate challenge of RFC 6750 (error="invalid_token" when a token was wrong)."""

    def __init__(self, message: str, invalid_token: bool) -> None:
        status, _, _ = errors.ERRORS["unauthorized"]
        super().__init__(status, "unauthorized", message)
        self.invalid_token = invalid_token

    def headers(self) -> dict[str, str]:
        challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if self.invalid_token else "")
        return {**super().headers(), "WWW-Authenticate": challenge}


def parse_tokens(text: str) -> list[str]:
    tokens = []
    for line in text.splitlines():
        tokens += [t for t in _SEPARATORS.split(line.split("#", 1)[0]) if t]
    return tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("latin-1", "replace")).digest()


class TokenStore:
    """The valid tokens' digests: from the environment (fixed) and a file (re-read when it changes)."""

    def __init__(self, env_tokens: tuple[str, ...] | list[str] = (), path: str = "") -> None:
        self.path = path
        self._env = [_digest(t) for t in env_tokens]
        self._file: list[bytes] = []
        self._stamp: tuple | None = None
        self._waiting: tuple | None = None  # the stamp of an incomplete file already logged
        self._next_check = 0.0
        for token in env_tokens:
            self._warn_if_weak(token, "BRIDGE_TOKENS")
        if path:
            try:
                self._load()
            except OSError as error:
                raise AuthConfigError(f"--token-file {path}: {error.strerror or error}") from None
        log.info("bearer tokens required: %d from BRIDGE_TOKENS%s", len(self._env),
                 f", {len(self._file)} from {path}" if path else "")
        self._refuse_all_warning()

    @property
    def count(self) -> int:
        return len(self._env) + len(self._file)

    def valid(self, token: str) -> bool:
        self._maybe_reload()
        presented = _digest(token)
        matched = False
        for digest in (*self._env, *self._file):
            matched |= hmac.compare_digest(digest, presented)
        return matched

    def reload(self, reason: str = "SIGHUP", complete_only: bool = False) -> None:
        """Reads the file again now (SIGHUP: as it is); keeps the current tokens when it cannot be read, or
        (`complete_only`) while it is not complete."""
        if not self.path:
            log.info("%s: no --token-file to reload", reason)
            return
        before = self.count
        try:
            self._load(complete_only)
        except OSError as error:
            log.warning("%s: cannot read --token-file %s (%s); keeping the %d token(s) in use", reason, self.path,
                        error.strerror or error, before)
            return
        except Incomplete as waiting:
            if self._waiting != waiting.args[1]:  # once per version of the file, not once a second
                self._waiting = waiting.args[1]
                log.info("%s: --token-file %s is not complete yet (%s); keeping the %d token(s) in use until it "
                         "is", reason, self.path, waiting.args[0], before)
            return
        log.info("%s: --token-file %s reloaded: %d token(s) from it, %d in all", reason, self.path,
                 len(self._file), self.count)
        self._refuse_all_warning()

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self.path or now < self._next_check:
            return
        self._next_check = now + RECHECK_SECONDS
        try:
            stamp = self._stat()
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self.reload("token file changed", complete_only=True)

    def _stat(self) -> tuple:
        # Follows symlinks: a Kubernetes Secret volume swaps a symlink to publish a new version.
        info = os.stat(self.path)
        return info.st_ino, info.st_mtime_ns, info.st_size

    def _load(self, complete_only: bool = False) -> None:
        stamp = self._stat()
        with open(self.path, encoding="latin-1") as handle:
            text = handle.read()
        if complete_only:
            if self._stat() != stamp:
                raise Incomplete("it changed while it was read", stamp)
            age = time.time() - stamp[1] / 1e9
            if not text.endswith("\n") and age < SETTLE_SECONDS:
                raise Incomplete(f"no final line break, and written {max(age, 0):.1f} s ago: it is taken as "
                                 f"complete once unchanged for {SETTLE_SECONDS:g} s", stamp)
        tokens = parse_tokens(text)
        for token in tokens:
            self._warn_if_weak(token, self.path)
        self._file = [_digest(t) for t in tokens]
        self._stamp = stamp

    def _refuse_all_warning(self) -> None:
        if self.count == 0:
            log.warning("authentication is on (--token-file given) but no token is configured: every request "
                        "outside the open routes is refused")

    @staticmethod
    def _warn_if_weak(token: str, source: str) -> None:
        if len(token) < SHORT_TOKEN:
            log.warning("a bearer token from %s has only %d characters; use %d or more random characters "
                        "(e.g. `openssl rand -hex 32`)", source, len(token), SHORT_TOKEN)


class Authenticator:
    """Decides whether a request may go on: `check(request)` returns or raises Unauthorized."""

    def __init__(self, tokens: TokenStore, protect_metrics: bool = True) -> None:
        self.tokens = tokens
        self.open_paths = OPEN_PATHS if protect_metrics else OPEN_PATHS | {"/metrics"}

    def check(self, request: Request) -> None:
        if request.path in self.open_paths:
            return
        scheme, _, credentials = request.header("authorization").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise Unauthorized("this bridge requires a bearer token: send the header 'Authorization: Bearer "
                               "<token>' (the test tool: --token or TESTTOOL_TOKEN)", invalid_token=False)
        if not self.tokens.valid(credentials):
            raise Unauthorized("the bearer token is not valid (expired or mistyped?)", invalid_token=True)
