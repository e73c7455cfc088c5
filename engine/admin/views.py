"""Reads the admin needs beyond the ``Store`` interface, and rows turned into JSON.

``StoreViews`` first uses a store method of the same name when the store has
one (so a store that grows ``delivery_counts``, ``oldest_queued``, ``study_counts``,
``get_case`` or ``get_order`` is used as is); otherwise, for the SQLite store, it
reads the tables through the store's reader pool. Other stores answer 501 until
they implement the method.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from engine.admin.phi import CASE_PHI, MESSAGE_PHI, ORDER_PHI, STUDY_PHI, mask_row
from engine.model import Message
from engine.store.base import Delivery, Store
from engine.store.clinical import CaseRow, OrderRow, StudyRow

_ORDER_COLS = ("id, order_key, patient_id, issuer, placer, filler, accession,"
               " requested_procedure_id, study_uid, modality, procedure_code, procedure_text,"
               " priority, status, control, patient_class, location, cancelled, created_at,"
               " updated_at, message_id")
_CASE_SQL = (
    "SELECT c.id, c.order_id, c.study_uid, c.revision, c.state, c.created_at,"
    " coalesce(o.accession, s.accession), coalesce(o.patient_id, s.patient_id),"
    " coalesce(o.modality, s.modality), s.body_part, o.procedure_code, o.priority,"
    " o.patient_class FROM cases c JOIN studies s ON s.uid = c.study_uid"
    " LEFT JOIN orders o ON o.id = c.order_id WHERE c.id=?")


class ViewUnavailable(Exception):
    """The store offers no way to answer this read."""


class StoreViews:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        read = getattr(self.store, "_read", None)
        if read is None:
            raise ViewUnavailable(f"{type(self.store).__name__} cannot answer this yet")
        rows: list[tuple[Any, ...]] = await read(sql, params)
        return rows

    def _own(self, name: str) -> Any:
        return getattr(self.store, name, None)

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """Deliveries by (destination, status)."""
        if (own := self._own("delivery_counts")) is not None:
            return dict(await own())
        rows = await self._sql("SELECT destination, status, count(*) FROM deliveries"
                               " GROUP BY destination, status")
        return {(r[0], r[1]): r[2] for r in rows}

    async def oldest_queued(self, destinations: list[str]) -> dict[str, float]:
        """When the message behind each destination's oldest waiting delivery arrived."""
        if (own := self._own("oldest_queued")) is not None:
            return dict(await own(destinations))
        out = {}
        for dest in destinations:
            rows = await self._sql(
                "SELECT m.received_at FROM deliveries d JOIN messages m ON m.id=d.message_id"
                " WHERE d.id=(SELECT min(id) FROM deliveries WHERE destination=? AND"
                " status='QUEUED')", (dest,))
            if rows:
                out[dest] = float(rows[0][0])
        return out

    async def study_counts(self) -> dict[str, int]:
        if (own := self._own("study_counts")) is not None:
            return dict(await own())
        rows = await self._sql("SELECT state, count(*) FROM studies GROUP BY state")
        return {r[0]: r[1] for r in rows}

    async def get_case(self, case_id: int) -> CaseRow | None:
        if (own := self._own("get_case")) is not None:
            found: CaseRow | None = await own(case_id)
            return found
        rows = await self._sql(_CASE_SQL, (case_id,))
        return CaseRow(*rows[0]) if rows else None

    async def get_order(self, order_id: int) -> tuple[OrderRow, int | None] | None:
        """An order and the id of the message that last changed it."""
        if (own := self._own("get_order")) is not None:
            found: tuple[OrderRow, int | None] | None = await own(order_id)
            return found
        rows = await self._sql(f"SELECT {_ORDER_COLS} FROM orders WHERE id=?", (order_id,))
        if not rows:
            return None
        r = list(rows[0])
        r[17] = bool(r[17])
        return OrderRow(*r[:20]), r[20]


# -- rows -> JSON ---------------------------------------------------------------------------

def message_summary(m: Message, masked: bool) -> dict[str, Any]:
    row = {"id": m.id, "channel": m.channel, "received_at": m.received_at,
           "status": str(m.status), "control_id": m.control_id,
           "message_type": m.message_type, "key": m.key, "duplicate": m.duplicate,
           "error": m.error, "size": len(m.raw)}
    return mask_row(row, MESSAGE_PHI) if masked else row


def delivery_summary(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "destination": d.destination, "status": str(d.status),
            "attempts": d.attempts, "error": d.error}


def study_dict(s: StudyRow, masked: bool) -> dict[str, Any]:
    row = dataclasses.asdict(s)
    return mask_row(row, STUDY_PHI) if masked else row


def order_dict(o: OrderRow, masked: bool) -> dict[str, Any]:
    row = dataclasses.asdict(o)
    return mask_row(row, ORDER_PHI) if masked else row


def case_dict(c: CaseRow, masked: bool) -> dict[str, Any]:
    row = dataclasses.asdict(c)
    return mask_row(row, CASE_PHI) if masked else row


# -- accession search ----------------------------------------------------------------------

_ACCESSION_FIELDS = (("OBR", 18), ("IPC", 1), ("OBR", 20), ("ORC", 2), ("ORC", 3))


def accessions_in(raw: bytes) -> set[str]:
    """Accession-like values of an order message: OBR-18 / IPC-1 (first component), and
    the order numbers some sites use as accession (OBR-20, ORC-2, ORC-3)."""
    text = raw.decode("latin-1")
    if not text.startswith("MSH") or len(text) < 4:
        return set()
    sep = text[3]
    comp = text[4] if len(text) > 4 else "^"
    found = set()
    for line in re.split(r"\r\n|\r|\n", text):
        parts = line.split(sep)
        for seg, n in _ACCESSION_FIELDS:
            if parts[0] == seg and len(parts) > n and parts[n]:
                found.add(parts[n].split(comp, 1)[0])
    return found
