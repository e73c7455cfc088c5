"""The admin's store reads, and rows turned into JSON.

Rows are turned into JSON whole; what a viewer sees of them is decided once, for every
answer, by the operation's allow-list (``engine.admin.phi``, applied in ``engine.admin.app``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from engine.model import Message
from engine.store.base import Delivery
from engine.store.clinical import CaseRow, OrderRow, StudyRow
from engine.store.protocols import AdminReads


class StoreViews:
    """The admin's reads; each is a store method (``AdminReads``, kept as one seam for the
    routes)."""

    def __init__(self, store: AdminReads) -> None:
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

def message_summary(m: Message) -> dict[str, Any]:
    return {"id": m.id, "channel": m.channel, "received_at": m.received_at,
            "status": str(m.status), "control_id": m.control_id,
            "message_type": m.message_type, "key": m.key, "duplicate": m.duplicate,
            "error": m.error, "size": len(m.raw)}


def delivery_summary(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "destination": d.destination, "status": str(d.status),
            "attempts": d.attempts, "error": d.error}


def study_dict(s: StudyRow) -> dict[str, Any]:
    return dataclasses.asdict(s)


def order_dict(o: OrderRow) -> dict[str, Any]:
    return dataclasses.asdict(o)


def case_dict(c: CaseRow) -> dict[str, Any]:
    return dataclasses.asdict(c)


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
