"""MLLP destination: persistent connection, checks the peer's ACK."""

from __future__ import annotations

from channels.mllp.client import MLLPClient
from channels.mllp.config import MLLPDestinationConfig
from engine.configbase import parse_hostport
from engine.errors import PeerRejected, PeerUnavailable
from engine.model import DeliveryRef
from engine.registry import register
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.header import HeaderError, parse_header


@register("destination", "mllp", MLLPDestinationConfig, "HL7 v2 over MLLP/TCP, ACK checked")
class MLLPDestination:
    """Sends one message at a time and accepts only a matching positive ACK.

    ``send`` raises ``PeerRejected`` for AE/AR/CE/CR (the peer's reason kept),
    ``PeerUnavailable`` for a connection failure or an unreadable / mismatched
    ACK (the connection is dropped: a stray ACK must not be paired with the
    next message), ``PeerTimeout`` when no ACK arrives in time.
    """

    def __init__(self, name: str, config: MLLPDestinationConfig) -> None:
        self.name = name
        self.config = config
        host, port = parse_hostport(config.endpoint, default_host="127.0.0.1")
        self.client = MLLPClient(
            host, port, ssl_context=config.tls.client_context() if config.tls else None,
            connect_timeout=config.connect_timeout_secs, ack_timeout=config.ack_timeout_secs,
            max_message_bytes=config.max_message_bytes)

    @property
    def retry_initial_secs(self) -> float:
        return self.config.retry_initial_secs

    @property
    def retry_max_secs(self) -> float:
        return self.config.retry_max_secs

    async def connect(self) -> None:
        await self.client.connect()

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        try:
            control_id = parse_header(payload).control_id
        except HeaderError as exc:
            raise PeerRejected("AR", f"not sent: {exc.reason}") from exc
        response = await self.client.send(payload)
        try:
            code, acked_id, reason = read_ack(response)
        except ValueError as exc:
            await self.client.close()
            raise PeerUnavailable(f"unreadable ACK: {exc}") from exc
        if acked_id != control_id:
            await self.client.close()
            raise PeerUnavailable(f"ACK for {acked_id!r}, expected {control_id!r}")
        if code not in ("AA", "CA"):
            raise PeerRejected(code, reason, response)
        return response

    async def close(self) -> None:
        await self.client.close()
