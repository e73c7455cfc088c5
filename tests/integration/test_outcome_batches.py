"""A pipeline batch's outcomes written in few statements end as if written one by one (issue 15:
multi-row statements, patient upserts together, one upsert per order), on both stores."""

from __future__ import annotations

from typing import Any

from engine.model import Identifier, Order, OrderEvent, Patient, PatientEvent, Status
from engine.store.base import NewMessage, Outcome, open_store
from engine.store.tx import ROWS_PER_STATEMENT


def patient(pid: str, family: str, merged_from: str | None = None) -> Patient:
    return Patient([Identifier(pid, "HOSP")], family_name=family,
                   merged_from=[Identifier(merged_from, "HOSP")] if merged_from else [])


async def stored(store: Any, n: int) -> list[int]:
    return [await store.insert_message(NewMessage("ris", 0.0, b"MSH|%d" % i))
            for i in range(n)]


async def test_patient_events_of_one_batch_end_as_if_applied_one_by_one(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        ids = await stored(store, 6)
        events = [
            PatientEvent("ADT^A01", "A01", "1", patient("P1", "ONE")),
            PatientEvent("ADT^A01", "A01", "2", patient("P2", "TWO")),
            OrderEvent("ORM^O01", "O01", "3", patient("P2", "TWO-AGAIN"),
                       [Order(patient("P2", "TWO-AGAIN"), "NW", placer_number="PL1",
                              accession="ACC1")]),
            PatientEvent("ADT^A08", "A08", "4", patient("P1", "UPDATED")),
            PatientEvent("ADT^A40", "A40", "5", patient("P3", "THREE", merged_from="P2")),
            PatientEvent("ADT^A08", "A08", "6", patient("P1", "LAST")),
        ]
        await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED, domain=e)
                                    for mid, e in zip(ids, events, strict=True)])
        rows = await store._rows("SELECT patient_id, family, merged_into FROM patients"
                                 " ORDER BY patient_id")
        assert [tuple(r) for r in rows] == [("P1", "LAST", None), ("P2", "TWO-AGAIN", "P3"),
                                            ("P3", "THREE", None)]
        # The order came before the merge in the batch: the merge moved it to P3.
        orders = await store.list_orders()
        assert [(o.order_key, o.patient_id) for o in orders] == [("PL1", "P3")]
    finally:
        await store.close()


async def test_an_order_sent_again_keeps_what_the_change_leaves_empty(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        p = patient("P1", "ONE")
        await store.apply_orders([Order(p, "NW", placer_number="PL1", accession="ACC1",
                                        modality="CR", priority="R")], None)
        await store.apply_orders([Order(p, "XO", placer_number="PL1", priority="S")], None)
        [order] = await store.list_orders()
        assert (order.order_key, order.accession, order.modality, order.priority,
                order.control) == ("PL1", "ACC1", "CR", "S", "XO")
    finally:
        await store.close()


async def test_deliveries_of_a_batch_larger_than_one_statement_keep_message_order(
        db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        n = 2 * ROWS_PER_STATEMENT + 3
        ids = await stored(store, n)
        await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED, layers={"mapped": b"%d" % mid},
                                            deliveries=[("out", b"%d" % mid), ("raw", None)])
                                    for mid in reversed(ids)])
        for dest in ("out", "raw"):
            queued = await store.next_deliveries(dest, n + 10)
            assert [d.message_id for d in queued] == ids
        assert (await store.get_message(ids[-1]))[0].layers["mapped"] == b"%d" % ids[-1]
    finally:
        await store.close()
