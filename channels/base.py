"""Connector contracts (tiny on purpose).

A **source** has ``start``/``stop`` and hands raw bytes to the engine through
a ``RawSink``; the engine answers through the ``Reply`` callback once the
message is durable. A **destination** has ``connect``/``send``/``close``; what
``send`` raises decides what the engine does (see ``engine.errors``):

* ``TransientDeliveryError`` (``PeerUnavailable``, ``PeerTimeout``): retry later
  with backoff, in order; the destination reconnects on the next ``send``.
* ``PeerRejected``: the peer refused this message; record ERROR, move on.
* anything else is a bug and is recorded as ERROR for that message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

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
    async def connect(self) -> None: ...

    async def send(self, payload: bytes) -> bytes:
        """Deliver one message and return the peer's response (its ACK)."""
        ...

    async def close(self) -> None: ...
