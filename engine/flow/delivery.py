"""Destination workers: send queued deliveries in order, retry transient failures.

One worker per destination channel sends its QUEUED deliveries strictly in
queue order (so order per key holds). What ``send`` raises decides, by type
(``engine.errors``, ``engine.connectors``):

* ``TransientDeliveryError``: the head stays and is retried with exponential
  backoff (or the peer's ``retry_after``), for ever: nothing is dropped;
* ``PermanentDeliveryError`` (``PeerRejected`` among them): ERROR with the
  reason (and the peer's answer), and the queue moves on;
* anything else is a connector bug: ERROR for that message, the queue moves on.

An operator may end a delivery (skip or cancel: ERROR with who and why) or put
an ERROR one back (retry) in the store, from the API, the dashboard or the CLI
of another process. Between retries the worker looks at its head's row again
(at least every ``CHECK_SECS``, at once when ``poke``\\ d), so a head an
operator ended is left at once; and after any wait it reads the queue afresh
rather than sending the rest of a batch read before the wait. A send already
under way finishes; if it reaches the peer, SENT is recorded (the truth wins
over the skip), otherwise the operator's ERROR stands.

A destination that takes batches (``max_batch`` > 1, ``send_batch``) is handed up to that
many of its queue at once; one that fails stops the batch there and is carried alone, as
above, then the rest follow in order. Results are recorded by ``_Recorder``: one store
transaction in flight per queue, carrying every result that came while the previous one
committed; the next send never waits for it. The queue is read again only once every
result is committed (a QUEUED row must not be handed out twice).

``head`` and ``head_age()`` say which delivery the worker is on and for how
long (its injected ``clock``): ``/ready`` and ``/metrics`` call a queue whose
head has not moved for ``[engine] stalled_queue_secs`` stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.connectors import BatchSent
from engine.errors import PeerRejected, PermanentDeliveryError, TransientDeliveryError
from engine.logs import event
from engine.model import DeliveryRef, DeliveryStatus
from engine.store.deliveries import (
    CANCELLED,
    MAX_NOTE,
    SKIPPED,
    DeliveryInfo,
    Finished,
    operator_note,
)
from engine.store.protocols import DeliveryActions, DeliveryQueue
from engine.store.records import Delivery

if TYPE_CHECKING:  # the contract is prose and a Protocol; nothing of it runs here
    from engine.connectors import Destination

log = logging.getLogger("radbridge.delivery")
BATCH = 256
RESCAN_SECS = 5.0
CHECK_SECS = 1.0  # between retries, look at the head's row at least this often


@dataclass(slots=True)
class _Result:
    status: DeliveryStatus
    response: bytes | None
    error: str | None
    waited: bool  # a retry wait happened: the rest of the batch may be stale


class _Recorder:
    """Records one queue's results, one store transaction in flight at a time: what is sent
    while one commits goes in the next, so the worker never waits on the store between
    sends and a fast peer's results are written in groups (one transaction for many).

    A result is recorded only after the peer has it, so a crash loses at most the results
    still waiting here or committing: those deliveries are still QUEUED and are sent again
    at start (at least once, as the contract has always said; a file already written with the
    same bytes counts as written). When a write fails, ``add`` raises it: the worker stops
    sending, and the batch is read again from the store.
    """

    def __init__(self, write: Callable[[list[Finished]], Awaitable[None]]) -> None:
        self._write_rows = write  # the store's finish_deliveries
        self._rows: list[Finished] = []
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    def add(self, d: Delivery, status: DeliveryStatus, response: bytes | None,
            error: str | None) -> None:
        """Queue *d*'s result; a write in flight takes it next. Raises what a write raised."""
        if self._failed is not None:
            raise self._failed
        self._rows.append((d, status, response, error))
        if self._task is None:
            self._task = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        try:
            while self._rows:
                rows, self._rows = self._rows, []
                await self._write_rows(rows)
        except Exception as exc:  # StoreUnavailable, StoreError: the rows stay QUEUED
            self._failed, self._rows = exc, []
        finally:
            self._task = None

    async def drain(self) -> None:
        """Wait until every result added is committed. Raises what a write raised."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._failed is not None:
            raise self._failed


class DeliveryWorker:
    def __init__(self, name: str, destination: Destination, store: DeliveryQueue,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.destination = destination
        self.store: DeliveryQueue = store
        self.clock = clock
        self._wake = asyncio.Event()
        self._poke = asyncio.Event()
        self.sent = 0
        self.errors = 0
        self.retries = 0
        self.backoff = 0.0
        self.head: Delivery | None = None  # the delivery being sent now
        self.head_since = 0.0  # clock() when it became the head
        self.last_error: str | None = None  # the head's last transient failure

    def wake(self) -> None:
        self._wake.set()

    def poke(self) -> None:
        """A delivery of this queue changed in the store (an operator): look again now."""
        self._poke.set()
        self._wake.set()

    def head_age(self) -> float:
        """Seconds the current head has been the head (0 with nothing to send)."""
        return max(0.0, self.clock() - self.head_since) if self.head is not None else 0.0

    async def run(self) -> None:
        try:
            while True:
                await self._run_once()
        finally:  # paused or stopped: nothing is being worked on
            self._set_head(None)

    async def _run_once(self) -> None:
        try:
            batch = await self.store.next_deliveries(self.name, BATCH)
        except Exception as exc:
            event(log, "DLV-401", "cannot read queue", destination=self.name,
                  reason=type(exc).__name__, level=logging.ERROR)
            batch = []
        if batch:
            try:
                await self._send_batch(batch)
            except Exception as exc:  # never let a bug stop the queue for good
                event(log, "DLV-498", "batch failed, will retry", destination=self.name,
                      reason=type(exc).__name__, level=logging.ERROR)
                await asyncio.sleep(1.0)
            return
        self._set_head(None)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), RESCAN_SECS)

    def _set_head(self, delivery: Delivery | None) -> None:
        if delivery is None or self.head is None or self.head.id != delivery.id:
            self.head_since = self.clock()
            self.last_error = None
        self.head = delivery

    async def _send_batch(self, batch: list[Delivery]) -> None:
        recorder = _Recorder(self.store.finish_deliveries)
        try:
            rest = batch
            while rest:
                done = await self._send_some(rest, recorder)
                if done is None:  # an operator ended the head, or a retry waited: read again
                    return
                rest = rest[done:]
        finally:
            await recorder.drain()

    async def _send_some(self, rest: list[Delivery], recorder: _Recorder) -> int | None:
        """Send the head of *rest* (up to ``max_batch`` at once) and record what happened:
        how many of *rest* are done, or None when the queue must be read again."""
        chunk = rest[:max(1, self.destination.max_batch)]
        self._set_head(chunk[0])
        sent = await self._try_batch(chunk)
        for d, response in zip(chunk, sent.responses, strict=False):
            self._delivered()
            recorder.add(d, DeliveryStatus.SENT, response, None)
        n = min(len(sent.responses), len(chunk))
        if sent.error is None:
            return n
        failed = chunk[n]
        self._set_head(failed)
        result = await self._send_one(failed, sent.error)
        if result is None:
            return None
        recorder.add(failed, result.status, result.response, result.error)
        return None if result.waited else n + 1

    async def _try_batch(self, chunk: list[Delivery]) -> BatchSent:
        """``send_batch`` of *chunk*; a batch that raises, or returns without sending or
        failing, is a connector bug charged to the first delivery."""
        try:
            sent = await self.destination.send_batch(
                [(d.payload, DeliveryRef(d.message_id, d.id)) for d in chunk])
        except Exception as exc:
            return BatchSent([], exc)
        if not sent.responses and sent.error is None:
            return BatchSent([], RuntimeError("send_batch sent nothing"))
        return sent

    async def _attempt(self, d: Delivery) -> bytes | Exception:
        try:
            return await self.destination.send(d.payload, DeliveryRef(d.message_id, d.id))
        except Exception as exc:  # decided by its type in _send_one
            return exc

    async def _send_one(self, d: Delivery, first: Exception | None = None) -> _Result | None:
        """Send *d* (whose try just raised *first*, if given) until it is sent or fails for
        good; None when an operator ended it meanwhile."""
        initial = self.destination.retry_initial_secs
        ceiling = self.destination.retry_max_secs
        delay, waited = initial, False
        outcome = first if first is not None else await self._attempt(d)
        while True:
            if isinstance(outcome, bytes):
                self._delivered()
                return _Result(DeliveryStatus.SENT, outcome, None, waited)
            if not isinstance(outcome, TransientDeliveryError):
                return self._failed(d, outcome, waited)
            # A peer's Retry-After wins over the backoff, capped at the ceiling.
            after = outcome.retry_after
            wait = delay if after is None else min(max(after, 0.0), ceiling)
            self._retrying(d, outcome, wait)
            await self.store.record_attempt(d, str(outcome))
            if not await self._still_queued(d, wait):
                return None
            delay, waited = min(delay * 2, ceiling), True
            outcome = await self._attempt(d)

    def _delivered(self) -> None:
        self.sent += 1
        self.backoff = 0.0

    def _failed(self, d: Delivery, exc: Exception, waited: bool) -> _Result:
        """ERROR for *d*: the peer refused it or it can never be sent (DLV-410), or the
        destination raised something outside the contract, a bug (DLV-499)."""
        self.errors += 1
        if isinstance(exc, PermanentDeliveryError):
            event(log, "DLV-410", "delivery failed for good, queue moves on",
                  destination=self.name, message_id=d.message_id, reason=type(exc).__name__,
                  code=exc.code if isinstance(exc, PeerRejected) else None)
            return _Result(DeliveryStatus.ERROR, exc.response, str(exc), waited)
        event(log, "DLV-499", "destination raised unexpectedly", destination=self.name,
              message_id=d.message_id, reason=type(exc).__name__, level=logging.ERROR)
        return _Result(DeliveryStatus.ERROR, None, f"{type(exc).__name__}: {exc}", waited)

    def _retrying(self, d: Delivery, exc: Exception, wait: float) -> None:
        self.retries += 1
        self.backoff = wait
        self.last_error = str(exc)
        event(log, "DLV-420", "delivery failed, will retry", destination=self.name,
              message_id=d.message_id, reason=type(exc).__name__, retry_in=f"{wait:.1f}s",
              level=logging.WARNING)

    async def _still_queued(self, d: Delivery, wait: float) -> bool:
        """Wait *wait* seconds before the next try, looking at *d*'s row at least every
        ``CHECK_SECS`` (at once when poked); False as soon as it is no longer QUEUED."""
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            self._poke.clear()
            try:
                status = await self.store.delivery_status(d.id)
            except Exception as exc:  # store trouble: keep retrying the head
                event(log, "DLV-401", "cannot read queue", destination=self.name,
                      reason=type(exc).__name__, level=logging.ERROR)
                status = DeliveryStatus.QUEUED
            if status != DeliveryStatus.QUEUED:
                self.backoff = 0.0
                event(log, "DLV-430", "delivery ended by an operator, queue moves on",
                      destination=self.name, message_id=d.message_id, delivery_id=d.id)
                return False
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), min(left, CHECK_SECS))

    async def close(self) -> None:
        await self.destination.close()


# -- operator actions (the admin API and ``radbridge deliveries``) -----------------------------

ACTIONS = {"skip": SKIPPED, "cancel": CANCELLED, "retry": "RETRY ASKED"}
_DONE = {"skip": "skipped", "cancel": "cancelled", "retry": "retried"}


def clean_reason(reason: Any) -> str:
    """The operator's reason on one line; ``ValueError`` when there is none."""
    text = " ".join(str(reason or "").split())
    if not text:
        raise ValueError("say why: a reason is required (it is kept with the delivery and "
                         "in the audit log)")
    return text[:MAX_NOTE]


async def operate(store: DeliveryActions, delivery_id: int, action: str, user: str,
                  reason: str) -> DeliveryInfo:
    """Skip or cancel a QUEUED delivery (ERROR, "SKIPPED by *user*: *reason*": its queue
    moves on), or retry an ERROR one (QUEUED again, sent next); the delivery after it.

    Raises ``LookupError`` (no such delivery) or ``ValueError`` (not possible in its
    status), each with a sentence for the operator. The running engine notices within
    ``CHECK_SECS`` (at once when the caller pokes its worker).
    """
    info = await store.get_delivery(delivery_id)
    if info is None:
        raise LookupError(f"no delivery {delivery_id}")
    note = operator_note(ACTIONS[action], user, reason)
    if action == "retry":
        changed = await store.requeue_delivery(delivery_id, note)
        wanted = DeliveryStatus.ERROR
    else:
        changed = await store.end_delivery(delivery_id, note)
        wanted = DeliveryStatus.QUEUED
    after = await store.get_delivery(delivery_id)
    if not changed or after is None:
        now = after.status if after is not None else info.status
        raise ValueError(f"delivery {delivery_id} is {now}: only a {wanted} delivery can be "
                         f"{_DONE[action]}")
    event(log, "DLV-440", "operator changed a delivery", destination=info.destination,
          delivery_id=delivery_id, message_id=info.message_id, action=action, user=user)
    return after
