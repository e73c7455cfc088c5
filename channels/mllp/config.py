"""Config models of the MLLP source and destination (documentation comes from here)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from engine.config.base import Strict, TLSConfig, check_hostport
from engine.peers import PeerLimitsConfig


class MLLPSourceConfig(PeerLimitsConfig):
    type: Literal["mllp"]
    listen: str = Field(description='Address to listen on, "host:port" (port 0 picks one).')
    tls: TLSConfig | None = Field(None, description="TLS, or mutual TLS with client_ca.")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024,
                                   description="Larger frames are discarded and answered AR.")
    idle_timeout_secs: float = Field(
        300, gt=0, description="Close connections with no frame started or answered this long "
                               "(bytes outside a frame do not count).")
    frame_timeout_secs: float = Field(
        30, gt=0, description="A frame (or TLS handshake) must complete within this long of its "
                              "start byte, else the connection is closed unanswered and the "
                              "partial frame dropped (the sender resends).")
    max_connections: int = Field(1024, ge=1, description="Further connections are closed at "
                                                         "once; the open ones are untouched.")
    max_buffer_bytes: int = Field(
        256 * 1024 * 1024, ge=1024,
        description="Unfinished frames of all connections together hold at most this many "
                    "bytes; a frame whose bytes go over it is discarded as it arrives and "
                    "answered AR (resend later). At least max_message_bytes.")

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))

    @model_validator(mode="after")
    def _budget_fits_a_message(self) -> MLLPSourceConfig:
        if self.max_buffer_bytes < self.max_message_bytes:
            raise ValueError(f"max_buffer_bytes ({self.max_buffer_bytes}) is smaller than "
                             f"max_message_bytes ({self.max_message_bytes}): a largest message "
                             "could never be received")
        return self


class MLLPDestinationConfig(Strict):
    type: Literal["mllp"]
    endpoint: str = Field(description='Peer address, "host:port".')
    tls: TLSConfig | None = None
    connect_timeout_secs: float = Field(10, gt=0)
    ack_timeout_secs: float = Field(30, gt=0, description="No ACK in time: retry (in order).")
    retry_initial_secs: float = Field(0.5, gt=0)
    retry_max_secs: float = Field(60, gt=0)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    retry_on: list[Literal["AE", "AR", "CE", "CR"]] = Field(
        default_factory=list, description="ACK codes that mean 'later' from this peer: the "
        "message stays at the head and is retried in order (e.g. [\"CR\"] for a peer that "
        "answers CR while its disk is full, as radbridge does). Others end it as ERROR.")
    max_ack_mismatches: int = Field(
        3, ge=1, description="An ACK that names another message (or cannot be read) is "
                             "retried on a fresh connection; after this many in a row for "
                             "one message it fails for good (ERROR) and the queue moves on.")

    _check_endpoint = field_validator("endpoint")(classmethod(lambda cls, v: check_hostport(v)))
