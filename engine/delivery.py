"""Destination workers: send queued deliveries in order, retry transient failures.

One worker per destination channel sends its QUEUED deliveries strictly in
queue order (so order per key holds). A transient failure
(``TransientDeliveryError``) blocks the head and is retried with exponential
backoff, forever: nothing is dropped. A rejection (``PeerRejected``) records
ERROR with the peer's answer and moves on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine.errors import PeerRejected, TransientDeliveryError
from engine.logs import event
from engine.model import DeliveryStatus
from engine.store.base import Delivery, Store

log = logging.getLogger("radbridge.delivery")
BATCH = 256
RESCAN_SECS = 5.0


class DeliveryWorker:
    def __init__(self, name: str, destination: Any, store: Store) -> None:
        self.name = name
        self.destination = destination
        self.store = store
        self._wake = asyncio.Event()
        self.sent = 0
        self.errors = 0
        self.retries = 0
        self.backoff = 0.0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
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
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), RESCAN_SECS)
            except TimeoutError:
                pass

    async def _send_batch(self, batch: list[Delivery]) -> None:
        pending: list[asyncio.Future[None]] = []
        try:
            for delivery in batch:
                status, response, error = await self._send_one(delivery)
                # Recording is group-committed; the next send need not wait for it.
                pending.append(asyncio.ensure_future(
                    self.store.finish_delivery(delivery, status, response, error)))
        finally:
            if pending:
                await asyncio.gather(*pending)

    async def _send_one(self, d: Delivery) -> tuple[DeliveryStatus, bytes | None, str | None]:
        initial = float(getattr(self.destination, "retry_initial_secs", 0.5))
        ceiling = float(getattr(self.destination, "retry_max_secs", 60.0))
        delay = initial
        while True:
            try:
                response = await self.destination.send(d.payload)
                self.sent += 1
                self.backoff = 0.0
                return DeliveryStatus.SENT, response, None
            except PeerRejected as exc:
                self.errors += 1
                event(log, "DLV-410", "peer rejected message", destination=self.name,
                      message_id=d.message_id, code=exc.code)
                return DeliveryStatus.ERROR, exc.response, str(exc)
            except TransientDeliveryError as exc:
                self.retries += 1
                # A peer's Retry-After (exc.retry_after, seconds) wins over the backoff,
                # capped at the destination's ceiling.
                after = getattr(exc, "retry_after", None)
                wait = delay if after is None else min(max(float(after), 0.0), ceiling)
                self.backoff = wait
                event(log, "DLV-420", "delivery failed, will retry", destination=self.name,
                      message_id=d.message_id, reason=type(exc).__name__, retry_in=f"{wait:.1f}s",
                      level=logging.WARNING)
                await self.store.record_attempt(d, str(exc))
                await asyncio.sleep(wait)
                delay = min(delay * 2, ceiling)
            except Exception as exc:  # a connector bug: fail this message, keep the queue moving
                self.errors += 1
                event(log, "DLV-499", "destination raised unexpectedly", destination=self.name,
                      message_id=d.message_id, reason=type(exc).__name__, level=logging.ERROR)
                return DeliveryStatus.ERROR, None, f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        await self.destination.close()
