"""Connector contracts (tiny on purpose).

A **source** has ``start``/``stop`` and hands raw bytes to the engine through
a ``RawSink``; the engine answers through the ``Reply`` callback once the
message is durable. A **destination** has ``connect``/``send``/``close``; what
``send`` raises decides what the engine does (see ``engine.errors``):

* ``TransientDeliveryError`` (``PeerUnavailable``, ``PeerTimeout``): the place is
  down (no connection, disk full, 5xx): retry later with backoff, in order; the
  destination reconnects on the next ``send``. Raise it only for what can pass.
* ``PermanentDeliveryError``: this delivery will fail the same way every time (a
  file name the file system refuses, a payload that cannot be framed);
  ``PeerRejected``, its subclass: the peer refused this message (AR, 4xx). Record
  ERROR with the reason, move on: one message never stops a queue.
* anything else is a bug and is recorded as ERROR for that message.

Between transient failures the delivery worker waits ``retry_initial_secs``, doubling up
to ``retry_max_secs`` (a peer's ``RetryLater.retry_after`` instead, capped at the same
ceiling). Every destination has both (``DestinationBase`` holds the defaults; a type whose
config has the keys takes them from there).

A queue head that keeps failing transiently is shown as stalled (``/ready``,
``/metrics``) and an operator may skip it (``radbridge deliveries skip``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from engine.model import DeliveryRef

Reply = Callable[[bytes | None], None]


class RawSink(Protocol):
    """The engine side of a source. Both methods must return quickly (no awaiting)."""

    def receive(self, payload: bytes, reply: Reply, peer: str) -> None: ...

    def oversized(self, head: bytes, size: int, reply: Reply, peer: str) -> None:
        """A frame over the size limit: *head* is its start, *size* its full length."""
        ...

    def over_budget(self, head: bytes, size: int, reply: Reply, peer: str) -> None:
        """A frame shed to keep the listener's buffer budget (answer: resend later)."""
        ...


class Source(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound address once started (lets tests and the CLI use port 0)."""
        ...


class Destination(Protocol):
    @property
    def retry_initial_secs(self) -> float:
        """Seconds to wait after the first transient failure (then doubled each time)."""
        ...

    @property
    def retry_max_secs(self) -> float:
        """The backoff's ceiling; a peer's ``Retry-After`` is capped here too."""
        ...

    async def connect(self) -> None: ...

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        """Deliver one message and return the peer's response (its ACK).

        *ref* names the delivery by our own ids (the worker always passes it; None when a
        caller outside the queue sends, e.g. a test): what a destination that names
        things (files) names them by, never a field of the message.
        """
        ...

    async def close(self) -> None: ...


class DestinationBase:
    """The defaults every destination shares (a type overrides them, usually from its
    config's ``retry_initial_secs`` / ``retry_max_secs``)."""

    retry_initial_secs: float = 0.5
    retry_max_secs: float = 60.0
