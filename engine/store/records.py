"""The rows the store hands out for messages and deliveries, and how both stores read them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.model import DeliveryStatus, Message, Status


@dataclass(slots=True)
class Delivery:
    id: int
    message_id: int
    destination: str
    status: DeliveryStatus
    attempts: int
    payload: bytes
    response: bytes | None = None
    error: str | None = None
    key: str | None = None


_STATUS = {str(s): s for s in Status}  # a dict lookup; calling the enum class is slower


def message_row(row: Sequence[Any]) -> Message:
    """A ``Message`` from the columns both stores select (``raw`` empty when not read)."""
    return Message(id=row[0], channel=row[1], received_at=row[2],
                   status=_STATUS.get(row[3]) or Status(row[3]), raw=bytes(row[4] or b""),
                   control_id=row[5], message_type=row[6], key=row[7],
                   duplicate=bool(row[8]), error=row[9])


def delivery_row(row: Sequence[Any]) -> Delivery:
    """A ``Delivery`` from the columns both stores select."""
    return Delivery(id=row[0], message_id=row[1], destination=row[2],
                    status=DeliveryStatus(row[3]), attempts=row[4], payload=bytes(row[5]),
                    response=bytes(row[6]) if row[6] is not None else None, error=row[7],
                    key=row[8])


@dataclass(slots=True)
class MessageQuery:
    channel: str | None = None
    status: str | None = None
    message_type: str | None = None
    control_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
