"""Connector contracts (tiny on purpose); the engine owns them, ``channels/`` implements them.

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

A source of raw messages (``sink="hl7"``) is answered by its protocol's **answerer**
(``Answerer``, registered by the payload name with ``engine.registry.register_answerer``):
the engine stores, decides and says *why* it refuses; the answerer reads the header and
builds the answer bytes (for HL7: ``mappings.hl7v2.answerer``).

A destination may also take a **batch** (``send_batch``, up to ``max_batch`` deliveries of
its queue, in order) where its peer allows it: the file destination writes a batch's files
and fsyncs their directory once. It delivers them in order and stops at the first that
fails: ``BatchSent`` says how many reached the peer (their answers) and what the one after
raised; the rest were not tried and stay queued behind it, so a failure never reorders the
queue. The worker then treats that failure as ``send``'s, for that delivery alone.
``DestinationBase.send_batch`` is the plain loop over ``send`` (``max_batch`` 1): a peer
that takes one message at a time (MLLP: one ACK at a time, in order) needs nothing more.

A queue head that keeps failing transiently is shown as stalled (``/ready``,
``/metrics``) and an operator may skip it (``radbridge deliveries skip``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from engine.model import DeliveryRef

# An answer: one frame, several frames in order (one per message of a batch), or nothing.
Reply = Callable[[bytes | tuple[bytes, ...] | None], None]


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


@dataclass(slots=True)
class BatchSent:
    """What ``send_batch`` did with ``items``: ``responses[i]`` is the peer's answer to
    ``items[i]`` for the first ``len(responses)``, all delivered; ``error`` is what sending
    the next one raised (None: none failed); any after it were not tried."""

    responses: list[bytes] = field(default_factory=list)
    error: Exception | None = None


class Destination(Protocol):
    @property
    def max_batch(self) -> int:
        """The most deliveries ``send_batch`` takes at once (1: one at a time)."""
        ...

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

    async def send_batch(self, items: Sequence[tuple[bytes, DeliveryRef]]) -> BatchSent:
        """Deliver *items* (payload, ref) in order, stopping at the first that fails; never
        raises for a delivery's failure (it is ``BatchSent.error``, typed as ``send``'s)."""
        ...

    async def close(self) -> None: ...


class DestinationBase:
    """The defaults every destination shares (a type overrides them, usually from its
    config's ``retry_initial_secs`` / ``retry_max_secs``)."""

    retry_initial_secs: float = 0.5
    retry_max_secs: float = 60.0
    max_batch: int = 1

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        raise NotImplementedError

    async def send_batch(self, items: Sequence[tuple[bytes, DeliveryRef]]) -> BatchSent:
        """One ``send`` after the other, stopping at the first that raises."""
        sent = BatchSent()
        for payload, ref in items:
            try:
                sent.responses.append(await self.send(payload, ref))
            except Exception as exc:  # the worker decides by its type, as for send
                sent.error = exc
                break
        return sent


# Why the engine refuses a message it could read (the answerer turns it into its protocol's
# error code and location): its type is not in ``accept``, its control id is a duplicate
# being rejected, it exceeds ``max_message_bytes``, the listener shed it to keep its buffer
# budget, or the store did not take it.
Refusal = Literal["not_accepted", "duplicate", "oversized", "over_budget", "store_failed"]


class Header(Protocol):
    """What the engine needs from a message's header (an answerer may carry more)."""

    @property
    def control_id(self) -> str: ...

    @property
    def message_type(self) -> str: ...

    @property
    def patient_id(self) -> str | None: ...

    @property
    def flags(self) -> tuple[str, ...]:
        """What lenient reading repaired (stored with the message as its ``flags`` layer)."""
        ...


class Answer(Protocol):
    """What to answer: ``code`` (accepted, error, rejected in the protocol's terms), the
    reason ``text`` stored with a refused message and the protocol's ``error_code`` (logged)."""

    @property
    def code(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def error_code(self) -> int | None: ...


class Batch(Protocol):
    """Several messages in one frame: each is decided and stored as if sent alone."""

    @property
    def messages(self) -> Sequence[bytes]: ...

    @property
    def notes(self) -> Sequence[str]:
        """Per message, where in the batch it came (stored with it as a flag)."""
        ...


class Answerer(Protocol):
    """A protocol's answer policy for a raw-message source. Every method is total except
    ``build`` (the engine then sends ``fallback``, which must not raise)."""

    accepted: Answer

    def unbatch(self, payload: bytes) -> Batch | None:
        """The messages of a frame that carries several (a batch), or None for one message."""
        ...

    def batch_answer(self, batch: Any, answers: list[bytes | None]) -> bytes | tuple[bytes, ...]:
        """The answer to a whole batch from each message's answer, in order (None: no answer
        for that message). The engine calls it once every message is stored or refused."""
        ...

    def read(self, payload: bytes) -> tuple[Any, Answer | None]:
        """The header (None: unreadable) and, if the message cannot be taken, the answer."""
        ...

    def read_head(self, head: bytes) -> Any:
        """The header of the kept head of a discarded message, or None."""
        ...

    def refuse(self, why: Refusal, reason: str) -> Answer:
        """The answer refusing a message for *why*, saying *reason*."""
        ...

    def build(self, header: Any, answer: Answer) -> bytes | None:
        """The answer's bytes (an ACK for HL7), echoing *header* (None: unreadable); None:
        send nothing (what the protocol says for this message, e.g. HL7 enhanced mode)."""
        ...

    def fallback(self, header: Any, answer: Answer) -> bytes:
        """A generic answer with the same code, for when ``build`` raised."""
        ...
