"""A message's status follows its deliveries (``engine.store.deliveries``), on both stores.

The roll-up reads every delivery of a batch's messages in one query and decides in Python
(``rolled_up``); these tests pin the rules it replaced a per-message SQL statement for:
a message waits while one delivery is QUEUED, ends ERROR with its first failed delivery's
error, SENT otherwise; a late failure never overwrites an operator's skip, a late SENT does;
a requeue puts the message back to QUEUED.
"""

from __future__ import annotations

import time
from typing import Any

from bench.hl7gen import adt_a01
from engine.model import DeliveryStatus, Status
from engine.store.base import NewMessage, Outcome
from engine.store.deliveries import rolled_up
from engine.store.records import Delivery


async def fan_out(store: Any, n: int, destinations: list[str]) -> list[list[Delivery]]:
    """*n* messages, each with one QUEUED delivery per destination: each message's
    deliveries, in destination order."""
    now = time.time()
    ids = [await store.insert_message(NewMessage("ris", now, adt_a01(f"R{i}"),
                                                 status=Status.TRANSFORMED)) for i in range(n)]
    await store.apply_outcomes([Outcome(m, Status.TRANSFORMED,
                                        deliveries=[(d, None) for d in destinations])
                                for m in ids])
    out = []
    for m in ids:
        _, ds = await store.get_message(m)
        out.append(sorted(ds, key=lambda d: destinations.index(d.destination)))
    return out


async def status_of(store: Any, delivery: Delivery) -> tuple[Status, str | None]:
    msg, _ = await store.get_message(delivery.message_id)
    return msg.status, msg.error


async def test_a_message_waits_for_every_delivery_then_ends_with_its_first_failure(store: Any
                                                                                   ) -> None:
    (a, b, c), (d, e, _) = await fan_out(store, 2, ["x", "y", "z"])
    await store.finish_deliveries([(a, DeliveryStatus.SENT, b"ack", None),
                                   (d, DeliveryStatus.SENT, b"ack", None),
                                   (e, DeliveryStatus.ERROR, None, "AR: refused")])
    assert await status_of(store, a) == (Status.QUEUED, None)
    assert await status_of(store, d) == (Status.QUEUED, None)
    await store.finish_deliveries([(c, DeliveryStatus.ERROR, None, "third failed"),
                                   (b, DeliveryStatus.ERROR, None, "second failed")])
    assert await status_of(store, a) == (Status.ERROR, "second failed")  # the first failed one


async def test_every_delivery_sent_in_one_batch_rolls_every_message_up_to_sent(store: Any
                                                                              ) -> None:
    messages = await fan_out(store, 5, ["x", "y"])
    await store.finish_deliveries([(d, DeliveryStatus.SENT, b"ack", None)
                                   for ds in messages for d in ds])
    assert [await status_of(store, ds[0]) for ds in messages] == [(Status.SENT, None)] * 5


async def test_a_late_failure_keeps_the_operators_skip_and_a_late_sent_replaces_it(store: Any
                                                                                  ) -> None:
    (a,), (b,) = await fan_out(store, 2, ["x"])
    assert await store.end_delivery(a.id, "SKIPPED by ann: wrong patient")
    assert await store.end_delivery(b.id, "SKIPPED by ann: test")
    assert await status_of(store, a) == (Status.ERROR, "SKIPPED by ann: wrong patient")
    await store.finish_deliveries([(a, DeliveryStatus.ERROR, None, "timeout"),
                                   (b, DeliveryStatus.SENT, b"ack", None)])
    assert await status_of(store, a) == (Status.ERROR, "SKIPPED by ann: wrong patient")
    assert await store.delivery_status(b.id) == DeliveryStatus.SENT
    assert await status_of(store, b) == (Status.SENT, None)


async def test_a_requeued_delivery_puts_its_message_back_until_it_is_sent(store: Any) -> None:
    ((a,),) = await fan_out(store, 1, ["x"])
    await store.finish_deliveries([(a, DeliveryStatus.ERROR, None, "AE: busy")])
    assert await status_of(store, a) == (Status.ERROR, "AE: busy")
    assert await store.requeue_delivery(a.id, "RETRIED by ann: peer back")
    assert await status_of(store, a) == (Status.QUEUED, None)
    await store.finish_deliveries([(a, DeliveryStatus.SENT, b"ack", None)])
    assert await status_of(store, a) == (Status.SENT, None)


def test_the_roll_up_rule_on_rows_in_any_order() -> None:
    rows = [(2, 21, "ERROR", "later"), (1, 10, "SENT", None), (2, 20, "ERROR", "first"),
            (3, 30, "QUEUED", None), (3, 31, "SENT", None), (2, 22, "SENT", None)]
    assert rolled_up(rows) == [(1, "SENT", None), (2, "ERROR", "first")]
