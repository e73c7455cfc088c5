"""The admin's store reads, and rows turned into JSON (PHI masked for viewers)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from engine.admin.phi import CASE_PHI, MESSAGE_PHI, ORDER_PHI, STUDY_PHI, mask_row
from engine.model import Message
from engine.store.base import Delivery, Store
from engine.store.clinical import CaseRow, OrderRow, StudyRow


class StoreViews:
    """The admin's reads; each is a ``Store`` method (kept as one seam for the routes)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        return await self.store.delivery_counts()

    async def oldest_queued(self, destinations: list[str]) -> dict[str, float]:
        return await self.store.oldest_queued(destinations)

    async def study_counts(self) -> dict[str, int]:
        return await self.store.study_counts()

    async def get_case(self, case_id: int) -> CaseRow | None:
        return await self.store.get_case(case_id)

    async def get_order(self, order_id: int) -> tuple[OrderRow, int | None] | None:
        return await self.store.get_order(order_id)


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
