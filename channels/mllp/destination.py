"""MLLP destination: persistent connection, checks the peer's ACK."""

from __future__ import annotations

import re
from typing import NoReturn

from channels.mllp.client import MLLPClient
from channels.mllp.config import MLLPDestinationConfig
from engine.config.base import parse_hostport
from engine.connectors import DestinationBase
from engine.errors import PeerRejected, PeerUnavailable, PermanentDeliveryError
from engine.model import DeliveryRef
from engine.registry import register
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.header import HeaderError, parse_header

FRAMING_BYTES = re.compile(rb"[\x0b\x1c]")


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


@register("destination", "mllp", MLLPDestinationConfig, "HL7 v2 over MLLP/TCP, ACK checked")
class MLLPDestination(DestinationBase):
    """Sends one message at a time and accepts only a matching positive ACK.

    ``send`` raises ``PeerRejected`` for AE/AR/CE/CR (the peer's reason kept;
    ``PeerUnavailable`` for the codes listed in ``retry_on``),
    ``PeerUnavailable`` for a connection failure or an unreadable / mismatched
    ACK (the connection is dropped: a stray ACK must not be paired with the
    next message), ``PeerTimeout`` when no ACK arrives in time. Each retry of
    a mismatch runs on a fresh connection, where no stray ACK can wait: after
    ``max_ack_mismatches`` in a row for one message the peer is telling us it
    cannot take it (it cuts MSA-2, say, to HL7 2.3's 20 characters), and
    ``send`` raises ``PermanentDeliveryError``. A payload holding the MLLP
    block bytes (0x0B, 0x1C) cannot be framed: ``PermanentDeliveryError``.
    """

    def __init__(self, name: str, config: MLLPDestinationConfig) -> None:
        self.name = name
        self.config = config
        self.retry_initial_secs = config.retry_initial_secs
        self.retry_max_secs = config.retry_max_secs
        host, port = parse_hostport(config.endpoint, default_host="127.0.0.1")
        self._strikes: tuple[str, int] = ("", 0)  # (control id, mismatched ACKs in a row)
        self.client = MLLPClient(
            host, port, ssl_context=config.tls.client_context() if config.tls else None,
            connect_timeout=config.connect_timeout_secs, ack_timeout=config.ack_timeout_secs,
            max_message_bytes=config.max_message_bytes)

    async def connect(self) -> None:
        await self.client.connect()

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        try:
            control_id = parse_header(payload).control_id
        except HeaderError as exc:
            raise PeerRejected("AR", f"not sent: {exc.reason}") from exc
        if FRAMING_BYTES.search(payload):
            raise PermanentDeliveryError("not sent: the message holds MLLP block bytes "
                                         "(0x0B or 0x1C) and cannot be framed")
        response = await self.client.send(payload)
        try:
            code, acked_id, reason = read_ack(response)
        except ValueError as exc:
            await self._mismatch(control_id, f"unreadable ACK: {exc}")
        if acked_id != control_id:
            await self._mismatch(control_id, f"ACK for {_short(acked_id)!r}, expected "
                                             f"{_short(control_id)!r}")
        self._strikes = ("", 0)
        if code in self.config.retry_on:
            raise PeerUnavailable(f"{code}: {reason} (retry_on)")
        if code not in ("AA", "CA"):
            raise PeerRejected(code, reason, response)
        return response

    async def _mismatch(self, control_id: str, why: str) -> NoReturn:
        """Drop the connection; retry, unless this message got ``max_ack_mismatches``."""
        await self.client.close()
        last, count = self._strikes
        count = count + 1 if last == control_id else 1
        self._strikes = (control_id, count)
        if count >= self.config.max_ack_mismatches:
            self._strikes = ("", 0)
            raise PermanentDeliveryError(f"{why}, {count} times in a row on fresh connections "
                                         "(max_ack_mismatches): the peer cannot take it")
        raise PeerUnavailable(why)

    async def close(self) -> None:
        await self.client.close()
