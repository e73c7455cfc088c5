"""One error hierarchy for the engine. Retry-or-fail is decided by type.

::

    RadbridgeError
    ├── ConfigError              a channels.toml problem: file, line, key, message
    │   └── ConfigErrors         several at once (lint reports them all)
    ├── StoreError               the store could not commit
    │   └── StoreUnavailable     disk full, read-only, locked: refuse new input (NAK AR / 0xA700)
    └── DeliveryError            a destination could not deliver
        ├── TransientDeliveryError   retry with backoff, in order (connection refused, timeout)
        │   ├── PeerUnavailable      could not connect
        │   └── PeerTimeout          connected, no answer in time
        └── PeerRejected         the peer answered AE/AR (or 4xx): record ERROR, do not retry
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """Retry later with backoff; order is kept, nothing is dropped."""


class PeerUnavailable(TransientDeliveryError):
    """The peer could not be reached (refused, reset, TLS failure)."""


class PeerTimeout(TransientDeliveryError):
    """The peer did not answer within the configured timeout."""


class PeerRejected(DeliveryError):
    """The peer answered with a negative acknowledgement; do not retry."""

    def __init__(self, code: str, reason: str, response: bytes | None = None) -> None:
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code = code
        self.reason = reason
        self.response = response
