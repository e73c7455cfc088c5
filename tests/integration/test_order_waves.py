"""A batch's orders applied a wave at a time (one upsert, the cancels, one read of studies)
end exactly as when each order ran its own upsert and correlation read, on both stores.

The oracle is the per-order code as it was (copied below): a batch goes through it into one
store and through ``apply_domain_events`` into a twin, and the tables are compared."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from engine.model import Identifier, Order, OrderEvent, Patient, PatientEvent, Status
from engine.store.base import Outcome, open_store
from engine.store.clinical import CANCEL_CONTROLS, CANCEL_STATUSES, CaseRow, InstanceMeta
from engine.store.clinical_sql import (
    _MATCH,
    _create_case,
    _PatientRows,
    apply_domain_events,
    apply_patient_op,
    complete_study_op,
    match_params,
    order_key,
)
from engine.store.tx import Tx
from tests.conftest import _pg, pg_schema_url

# -- the oracle: the per-order code as it was -------------------------------------------------

_OLD_UPSERT = (
    "INSERT INTO orders (patient_id, issuer, placer, filler, accession,"
    " requested_procedure_id, study_uid, modality, procedure_code, procedure_text,"
    " priority, status, control, patient_class, location, message_id, updated_at,"
    " order_key, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (order_key) DO UPDATE SET"
    " patient_id = coalesce(excluded.patient_id, orders.patient_id),"
    " issuer = coalesce(excluded.issuer, orders.issuer),"
    " placer = coalesce(excluded.placer, orders.placer),"
    " filler = coalesce(excluded.filler, orders.filler),"
    " accession = coalesce(excluded.accession, orders.accession),"
    " requested_procedure_id = coalesce(excluded.requested_procedure_id,"
    " orders.requested_procedure_id),"
    " study_uid = coalesce(excluded.study_uid, orders.study_uid),"
    " modality = coalesce(excluded.modality, orders.modality),"
    " procedure_code = coalesce(excluded.procedure_code, orders.procedure_code),"
    " procedure_text = coalesce(excluded.procedure_text, orders.procedure_text),"
    " priority = coalesce(excluded.priority, orders.priority),"
    " status = coalesce(excluded.status, orders.status), control = excluded.control,"
    " patient_class = coalesce(excluded.patient_class, orders.patient_class),"
    " location = coalesce(excluded.location, orders.location),"
    " message_id = excluded.message_id, updated_at = excluded.updated_at"
    " RETURNING id, study_uid, accession, patient_id, issuer")


async def old_apply_orders(tx: Tx, orders: Sequence[Order], message_id: int | None
                           ) -> list[CaseRow]:
    cases: list[CaseRow] = []
    for o in orders:
        pid = o.patient.primary_id
        now = time.time()
        row = await tx.row(_OLD_UPSERT, pid.value if pid else None,
                           pid.issuer if pid else None, o.placer_number, o.filler_number,
                           o.accession, o.requested_procedure_id, o.study_instance_uid,
                           o.modality, o.procedure_code, o.procedure_text, o.priority,
                           o.status, o.control, o.patient.patient_class, o.patient.location,
                           message_id, now, order_key(o), now)
        assert row is not None
        if o.control.upper() in CANCEL_CONTROLS or (o.status or "").upper() in CANCEL_STATUSES:
            await tx.execute("UPDATE orders SET cancelled = 1 WHERE id = ?", row[0])
            await tx.execute("UPDATE cases SET state = 'cancelled', updated_at = ? WHERE"
                             " order_id = ? AND state = 'ready'", time.time(), row[0])
            continue
        studies = await tx.rows(f"SELECT uid, state, revision FROM studies WHERE"
                                f" {_MATCH.format(uid='uid')}",
                                *match_params(row[1], row[2], row[3], row[4]))
        for uid, state, revision in studies:
            if state == "receiving" and (o.status or "").upper() == "CM":
                cases += await complete_study_op(tx, uid)
            elif state == "complete":
                cases += await _create_case(tx, int(row[0]), uid, revision, "ready")
    return cases


async def old_domain_events(tx: Tx, outcomes: Sequence[Any]) -> list[CaseRow]:
    cases: list[CaseRow] = []
    patients = _PatientRows()
    for o in outcomes:
        mapped = o.domain
        if mapped is None:
            continue
        if not patients.add(mapped.patient):
            await patients.flush(tx)
            cases += await apply_patient_op(tx, mapped.event, mapped.patient)
        if isinstance(mapped, OrderEvent):
            cases += await old_apply_orders(tx, mapped.orders, o.message_id)
    await patients.flush(tx)
    return cases


# -- stores and what they hold --------------------------------------------------------------

@pytest.fixture
def twin_url(db_url: str, tmp_path: Any, _pg_schemas: list[str]) -> str:
    """A second fresh store of *db_url*'s kind."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'twin.db'}"
    schema = f"rb_{secrets.token_hex(6)}"
    asyncio.run(_pg(f"CREATE SCHEMA {schema}"))
    _pg_schemas.append(schema)
    return pg_schema_url(schema)


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[Any]:
    store = open_store(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def tables(store: Any) -> dict[str, list[tuple[Any, ...]]]:
    """What the stores must agree on (no times: they differ by when each ran)."""
    queries = {
        "orders": "SELECT id, order_key, patient_id, issuer, placer, filler, accession,"
                  " requested_procedure_id, study_uid, modality, procedure_code,"
                  " procedure_text, priority, status, control, patient_class, location,"
                  " cancelled, message_id FROM orders ORDER BY id",
        "studies": "SELECT uid, accession, patient_id, issuer, state, revision FROM studies"
                   " ORDER BY uid",
        "cases": "SELECT o.order_key, c.study_uid, c.revision, c.state FROM cases c"
                 " LEFT JOIN orders o ON o.id = c.order_id ORDER BY c.study_uid, c.revision",
        "patients": "SELECT patient_id, issuer, family, merged_into FROM patients"
                    " ORDER BY patient_id, issuer",
    }
    return {name: [tuple(r) for r in await store._rows(sql)] for name, sql in queries.items()}


def made(cases: Sequence[CaseRow]) -> list[tuple[Any, ...]]:
    """Cases an apply returned, but for their ids and times (an order matching several
    studies may meet them in either order)."""
    return sorted((c.order_id, c.study_uid, c.revision, c.state, c.accession, c.patient_id,
                   c.modality, c.procedure_code, c.priority, c.patient_class) for c in cases)


def outcomes(events: Sequence[Any], first_id: int = 1) -> list[Outcome]:
    return [Outcome(first_id + n, Status.TRANSFORMED, domain=e) for n, e in enumerate(events)]


async def batch_old(store: Any, events: Sequence[Any], first_id: int = 1) -> list[CaseRow]:
    cases: list[CaseRow] = await store._transact(old_domain_events, outcomes(events, first_id),
                                                 lock=True)
    return cases


async def batch_new(store: Any, events: Sequence[Any], first_id: int = 1) -> list[CaseRow]:
    cases: list[CaseRow] = await store._transact(apply_domain_events,
                                                 outcomes(events, first_id), lock=True)
    return cases


async def study(store: Any, uid: str, accession: str | None, pid: str | None,
                issuer: str | None = "H", *, complete: bool = True, sop: int = 1) -> None:
    meta = InstanceMeta(uid, f"{uid}.1", f"{uid}.1.{sop}", "1.2.840.10008.5.1.4.1.1.1",
                        "1.2.840.10008.1.2.1", patient_id=pid, issuer=issuer,
                        accession=accession)
    await store.add_instance("pacs", meta, "/dev/null", 1, 600.0)
    if complete:
        await store.complete_study(uid)


def patient(pid: str, issuer: str | None = "H", family: str = "DOE",
            merged_from: Identifier | None = None) -> Patient:
    return Patient([Identifier(pid, issuer)], family_name=family,
                   merged_from=[merged_from] if merged_from else [])


def ordered(p: Patient, control: str, **fields: Any) -> OrderEvent:
    return OrderEvent("ORM^O01", "O01", None, p, [Order(p, control, **fields)])


async def both(db_url: str, twin_url: str, prepare: Any, *batches: Sequence[Any]
               ) -> dict[str, list[tuple[Any, ...]]]:
    """Run *prepare(store)* then *batches* on a store the old way and on its twin the new
    way; assert that every batch returned the same cases and that the tables agree; the
    tables."""
    async with opened(db_url) as old, opened(twin_url) as new:
        await prepare(old)
        await prepare(new)
        first = 1
        for events in batches:
            assert made(await batch_old(old, events, first)) == \
                made(await batch_new(new, events, first))
            first += len(events)
        want, got = await tables(old), await tables(new)
        assert got == want
        return got


# -- the cases the waves must get right ---------------------------------------------------------

async def nothing(store: Any) -> None:
    return None


async def test_one_key_three_times_in_a_batch_ends_as_one_by_one(db_url: str,
                                                                 twin_url: str) -> None:
    p = patient("X1")
    batch = [
        ordered(p, "NW", placer_number="PL1", accession="ACC1", modality="CR", priority="R",
                procedure_code="CHEST", status="SC", study_instance_uid="1.2.3"),
        ordered(patient("X1", None), "XO", placer_number="PL1", priority="S"),
        ordered(p, "CA", placer_number="PL1"),
    ]
    got = await both(db_url, twin_url, nothing, batch)
    [order] = got["orders"]
    assert order[1:] == ("PL1", "X1", "H", "PL1", None, "ACC1", None, "1.2.3", "CR", "CHEST",
                         None, "S", "SC", "CA", None, None, 1, 3)


async def test_orders_meeting_complete_studies_create_their_cases(db_url: str,
                                                                  twin_url: str) -> None:
    async def prepare(store: Any) -> None:
        await study(store, "1.1", "ACC1", "X1")
        await study(store, "1.2", "ACC2", "X2", issuer=None)
        await study(store, "1.3", "ACC3", "X3")

    batch = [
        ordered(patient("X1"), "NW", placer_number="PL1", accession="ACC1"),  # by accession
        ordered(patient("X9"), "NW", placer_number="PL2", study_instance_uid="1.2"),  # by uid
        ordered(patient("X3", "OTHER"), "NW", placer_number="PL3", accession="ACC3"),  # issuer
        ordered(patient("X4"), "NW", placer_number="PL4", accession="ACC3"),  # not X4's
    ]
    got = await both(db_url, twin_url, prepare, batch)
    assert got["cases"] == [("PL1", "1.1", 0, "ready"), ("PL2", "1.2", 0, "ready")]


async def test_an_order_completing_a_study_does_not_see_the_orders_after_it(
        db_url: str, twin_url: str) -> None:
    """PL1 (CM) completes the study: the study is joined with PL1, not with PL2, which names
    it by Study UID but comes after PL1 in the batch."""
    async def prepare(store: Any) -> None:
        await study(store, "2.1", "ACC1", "X1", complete=False)

    batch = [
        ordered(patient("X1"), "SC", placer_number="PL1", accession="ACC1", status="CM"),
        ordered(patient("X1"), "NW", placer_number="PL2", study_instance_uid="2.1"),
    ]
    got = await both(db_url, twin_url, prepare, batch)
    assert got["cases"] == [("PL1", "2.1", 0, "ready")]
    assert got["studies"][0][4] == "complete"


async def test_a_study_an_order_completes_takes_the_order_of_its_batch_changed_last(
        db_url: str, twin_url: str) -> None:
    """PL1 and PL2 both match the study by accession; PL2 (CM) completes it. One by one,
    PL2 changed last and takes the case: so must it when both are written in one upsert."""
    async def prepare(store: Any) -> None:
        await study(store, "2.2", "ACC1", "X1", complete=False)

    batch = [
        ordered(patient("X1"), "NW", placer_number="PL1", accession="ACC1"),
        ordered(patient("X1"), "SC", placer_number="PL2", accession="ACC1", status="CM"),
    ]
    got = await both(db_url, twin_url, prepare, batch)
    assert got["cases"] == [("PL2", "2.2", 0, "ready")]


async def test_the_next_order_of_a_batch_sees_the_study_an_order_completed(
        db_url: str, twin_url: str) -> None:
    """PL1 and PL2 were cancelled. PL1's CM completes the study, which takes no order (its
    join skips cancelled ones); PL2, later in the batch, must meet the study complete: its
    own correlation makes its case (it does not look at cancelled)."""
    async def prepare(store: Any) -> None:
        await study(store, "3.1", "ACC1", "X1", complete=False)

    p = patient("X1")
    placed = [ordered(p, "NW", placer_number="PL1", accession="ACC1"),
              ordered(p, "NW", placer_number="PL2", accession="ACC1")]
    cancelled = [ordered(p, "CA", placer_number="PL1"), ordered(p, "CA", placer_number="PL2")]
    batch = [ordered(p, "SC", placer_number="PL1", status="CM"),
             ordered(p, "SC", placer_number="PL2", status="IP")]
    got = await both(db_url, twin_url, prepare, placed, cancelled, batch)
    assert got["cases"] == [("PL2", "3.1", 0, "ready")]


async def test_cancelled_orders_cancel_their_ready_cases(db_url: str, twin_url: str) -> None:
    async def prepare(store: Any) -> None:
        await study(store, "4.1", "ACC1", "X1")
        await study(store, "4.2", "ACC2", "X1")
        await study(store, "4.3", "ACC3", "X1")

    p = patient("X1")
    placed = [ordered(p, "NW", placer_number="PL1", accession="ACC1"),
              ordered(p, "NW", placer_number="PL2", accession="ACC2")]
    batch = [
        ordered(p, "NW", placer_number="PL3", accession="ACC3"),
        ordered(p, "CA", placer_number="PL1"),
        ordered(p, "SC", placer_number="PL2", status="DC"),
        ordered(p, "OC", placer_number="PL3"),  # placed in this batch: a wave of its own
    ]
    got = await both(db_url, twin_url, prepare, placed, batch)
    assert got["cases"] == [("PL1", "4.1", 0, "cancelled"), ("PL2", "4.2", 0, "cancelled"),
                            ("PL3", "4.3", 0, "cancelled")]
    assert [o[17] for o in got["orders"]] == [1, 1, 1]


async def test_a_merge_between_orders_moves_only_the_orders_before_it(
        db_url: str, twin_url: str) -> None:
    async def prepare(store: Any) -> None:
        await study(store, "5.1", "ACC2", "X3")

    batch = [
        ordered(patient("X2"), "NW", placer_number="PL1", accession="ACC1"),
        PatientEvent("ADT^A40", "A40", None,
                     patient("X3", family="MERGED", merged_from=Identifier("X2", "H"))),
        ordered(patient("X2"), "NW", placer_number="PL2", accession="ACC2"),
        ordered(patient("X3"), "NW", placer_number="PL3", accession="ACC2"),
    ]
    got = await both(db_url, twin_url, prepare, batch)
    assert [(o[1], o[2]) for o in got["orders"]] == [("PL1", "X3"), ("PL2", "X2"),
                                                     ("PL3", "X3")]
    assert got["cases"] == [("PL3", "5.1", 0, "ready")]


# -- a batch of distinct orders is a few statements ---------------------------------------------

_STATEMENTS = {"execute", "executemany", "rows", "row", "value", "insert", "many",
               "many_rows"}


class Counting:
    """A ``Tx`` that counts the statements run on it."""

    def __init__(self, tx: Tx) -> None:
        self.tx, self.statements = tx, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.tx, name)
        if name not in _STATEMENTS:
            return attr

        async def counted(*args: Any) -> Any:
            self.statements += 1
            return await attr(*args)

        return counted


async def counted_events(tx: Tx, events: Sequence[Outcome]) -> tuple[list[CaseRow], int]:
    counting = Counting(tx)
    cases = await apply_domain_events(counting, events)  # type: ignore[arg-type]
    return cases, counting.statements


async def test_a_batch_of_distinct_orders_is_three_statements(db_url: str) -> None:
    async with opened(db_url) as store:
        events = [ordered(patient(f"X{n}"), "NW", placer_number=f"PL{n}", accession=f"ACC{n}")
                  for n in range(300)]  # more than one SQLite statement's rows
        _, statements = await store._transact(counted_events, outcomes(events), lock=True)
        # The upsert (on SQLite a statement per 256 rows), the studies' read, the patients.
        assert statements == 3
        assert len(await store.list_orders(limit=1000)) == 300


# -- random batches: the waves end as one by one ----------------------------------------------

def random_batches(seed: int) -> tuple[list[tuple[str, str | None, str | None, str | None]],
                                       list[tuple[list[tuple[str, bool]], list[Any]]]]:
    """Studies (uid, accession, patient, issuer) and rounds of (study instances to add,
    each with whether to complete the study after it; a batch of events), every name
    prefixed by the seed so that seeds share the stores."""
    r = random.Random(seed)
    s = f"s{seed}-"
    patients = [(s + "X1", "H"), (s + "X1", None), (s + "X2", "H"), (s + "X2", "K"),
                (s + "X3", None)]
    accessions = [s + "A1", s + "A2", s + "A3"]
    uids = [s + "U1", s + "U2", s + "U3", s + "U4"]
    studies = [(uid, r.choice([None, *accessions]), *r.choice(patients)) for uid in uids]

    def pat() -> Patient:
        pid, issuer = r.choice(patients)
        return Patient([Identifier(pid, issuer)], family_name=r.choice(["A", "B"]),
                       patient_class=r.choice([None, "I", "O"]),
                       location=r.choice([None, "W1"]))

    def order(p: Patient) -> Order:
        placer = r.choice([s + "P1", s + "P2", s + "P3", None])
        filler = r.choice([None, None, s + "F1"])
        accession = r.choice([None, *accessions])
        if not (placer or filler or accession):
            placer = s + "P1"
        return Order(p, r.choice(["NW", "NW", "XO", "SC", "SC", "CA", "DC", "nw"]),
                     placer_number=placer, filler_number=filler, accession=accession,
                     study_instance_uid=r.choice([None, None, *uids]),
                     modality=r.choice([None, "CR", "CT"]),
                     priority=r.choice([None, "S", "R"]),
                     status=r.choice([None, "SC", "IP", "CM", "CM", "cm", "CA"]))

    def event() -> Any:
        roll = r.random()
        if roll < 0.1:
            (new, new_issuer), (old, old_issuer) = r.sample(patients, 2)
            return PatientEvent("ADT^A40", "A40", None, Patient(
                [Identifier(new, new_issuer)], family_name="M",
                merged_from=[Identifier(old, old_issuer)]))
        p = pat()
        if roll < 0.2:
            return PatientEvent("ADT^A08", "A08", None, p)
        return OrderEvent("ORM^O01", "O01", None, p, [order(p) for _ in range(r.randint(1, 3))])

    rounds = []
    for _ in range(5):
        adds = [(uid, r.random() < 0.5) for uid in uids if r.random() < 0.4]
        rounds.append((adds, [event() for _ in range(r.randint(1, 14))]))
    return studies, rounds


async def test_random_batches_end_as_applied_one_by_one(db_url: str, twin_url: str) -> None:
    async with opened(db_url) as old, opened(twin_url) as new:
        first, sop = 1, 0
        for seed in range(40):
            studies, rounds = random_batches(seed)
            meta = {uid: rest for uid, *rest in studies}
            for adds, events in rounds:
                for uid, complete in adds:
                    sop += 1
                    for store in (old, new):
                        await study(store, uid, *meta[uid], complete=complete, sop=sop)
                was, now = await batch_old(old, events, first), await batch_new(new, events,
                                                                                first)
                assert made(now) == made(was), seed
                first += len(events)
            assert await tables(new) == await tables(old), seed
