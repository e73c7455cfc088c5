"""One error hierarchy for the engine. Retry-or-fail is decided by type.

::

    RadbridgeError
    ├── ConfigError              a channels.toml problem: file, line, key, message
    │   └── ConfigErrors         several at once (lint reports them all)
    ├── StoreError               the store could not commit
    │   └── StoreUnavailable     disk full, read-only, locked: refuse new input (NAK AR / 0xA700)
    └── DeliveryError            a destination could not deliver
        ├── TransientDeliveryError   retry with backoff, in order (connection refused, timeout,
        │   │                        disk full): the place is down, not the message
        │   ├── PeerUnavailable      could not connect (or write: ENOSPC, EIO...)
        │   │   └── RetryLater       the peer answered "busy, come back" (HTTP 408, 429, 5xx),
        │   │                        perhaps saying when (``Retry-After``)
        │   └── PeerTimeout          connected, no answer in time
        └── PermanentDeliveryError   this delivery fails the same way however often it is
            │                        tried (a file name the file system refuses, a payload
            │                        that cannot be framed): record ERROR, move on
            └── PeerRejected         the peer answered AE/AR (or 4xx): record ERROR, do not retry

A destination's ``send`` raises one of these (``engine.connectors``); the delivery worker
decides by type alone. OS errors of destinations that write files are classified once,
in ``engine.outfiles.os_delivery_error``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


class RadbridgeError(Exception):
    """Base of every error the engine raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class ConfigError(RadbridgeError):
    def __init__(self, problem: ConfigProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class ConfigErrors(ConfigError):
    """Every problem found in one configuration file, in line order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.key))
        RadbridgeError.__init__(self, "\n".join(str(p) for p in self.problems))
        self.problem = self.problems[0]


class StoreError(RadbridgeError):
    """A store operation failed."""


class StoreUnavailable(StoreError):
    """The store cannot accept writes right now (disk full, read-only, locked)."""


class DeliveryError(RadbridgeError):
    """A destination could not deliver a message."""


class TransientDeliveryError(DeliveryError):
    """Retry later with backoff; order is kept, nothing is dropped. ``retry_after``: the
    peer's own wish in seconds (an HTTP Retry-After), used instead of the backoff."""

    retry_after: float | None = None


class PeerUnavailable(TransientDeliveryError):
    """The peer could not be reached (refused, reset, TLS failure)."""


class PeerTimeout(TransientDeliveryError):
    """The peer did not answer within the configured timeout."""


class RetryLater(PeerUnavailable):
    """The peer answered, but asks to be tried again later (busy, a gateway failed).
    ``retry_after``: its ``Retry-After`` in seconds (None: it said nothing we can read; the
    worker's backoff decides). Build it from the header with ``from_header``."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def from_header(cls, message: str, value: str | None,
                    clock: Callable[[], float] = time.time) -> RetryLater:
        """*message* with the delay a ``Retry-After`` header *value* asks for."""
        return cls(message, retry_after_secs(value, clock))


def retry_after_secs(value: str | None, clock: Callable[[], float] = time.time) -> float | None:
    """An HTTP ``Retry-After`` (RFC 9110 10.2.3) as seconds from now: delay-seconds or an
    HTTP-date, a date in the past being 0. None when absent or unreadable (garbage is
    ignored, never an error: the backoff decides). *clock*: wall-clock seconds (tests
    inject one)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime (and "-0000") carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - clock())


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: this delivery ends as ERROR with the reason and the queue moves
    on (an operator may retry it once the cause is fixed). ``response`` is what the peer
    answered, if anything."""

    response: bytes | None = None


class PeerRejected(PermanentDeliveryError):
    """The peer answered with a negative acknowledgement; do not retry."""

    def __init__(self, code: str, reason: str, response: bytes | None = None) -> None:
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code = code
        self.reason = reason
        self.response = response
