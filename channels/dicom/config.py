"""Config model of the DICOM C-STORE source (its documentation comes from here)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from engine.config.base import TLSConfig, check_hostport
from engine.peers import PeerLimitsConfig


def check_ae_title(value: str) -> str:
    """An AE title: 1-16 characters of the default repertoire, no backslash, not all spaces."""
    title = value.strip()
    if not title or len(value) > 16:
        raise ValueError("an AE title has 1 to 16 characters and is not all spaces")
    if any(c == "\\" or not 0x20 <= ord(c) < 0x7F for c in value):
        raise ValueError("an AE title uses printable ASCII without a backslash")
    return title


class DicomSourceConfig(PeerLimitsConfig):
    """``allow`` and ``max_connections_per_peer`` (``engine.peers``) are checked per TCP
    connection: a peer off the list is closed before any byte is read (or a TLS handshake);
    one over its limit, or over ``max_associations``, is answered A-ASSOCIATE-RJ
    (rejected-transient, local limit exceeded)."""

    type: Literal["dicom"]
    ae_title: str = Field(description="Our AE title; associations calling another are rejected.")
    listen: str = Field(description='Address to listen on, "host:port" (port 0 picks one).')
    allowed_calling_aets: list[str] = Field(
        [],
        description="Calling AE titles that may associate; empty: any calling AE.")
    max_pdu: int = Field(
        262_144, ge=0,
        description="Largest P-DATA PDU we accept, in bytes; a peer's PDU declaring more is "
                    "aborted after its 6-byte header (0: no limit advertised, still aborted "
                    "above 64 MiB). Larger PDUs mean fewer round trips for big images.")
    max_associations: int = Field(
        32, ge=1, description="Further associations are rejected (transient, local limit).")
    max_connections_per_peer: int = Field(
        16, ge=1, description="Associations one peer may hold at once (a peer: one IPv4 "
                              "address, or one IPv6 /64 network); further ones from it are "
                              "rejected (transient, local limit), so one sender cannot take "
                              "every slot of max_associations. Behind a DICOM router every "
                              "sender shares its address: raise it to max_associations.")
    store_timeout_secs: float = Field(
        60, gt=0, description="An instance not indexed within this long is answered 0xA701 "
                              "(out of resources): the sender retries it later.")
    network_timeout_secs: float = Field(
        120, gt=0, description="Close an association idle this long.")
    acse_timeout_secs: float = Field(30, gt=0, description="Association negotiation timeout.")
    dimse_timeout_secs: float = Field(60, gt=0, description="Timeout for one DIMSE message.")
    stop_grace_secs: float = Field(
        5, ge=0, description="On stop, let open associations finish for this long, then abort.")
    tls: TLSConfig | None = Field(None, description="DICOM TLS, or mutual TLS with client_ca.")

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))
    _check_ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))

    @field_validator("allowed_calling_aets")
    @classmethod
    def _check_calling(cls, value: list[str]) -> list[str]:
        return [check_ae_title(v) for v in value]
