"""Building blocks shared by the config models of the engine and of connectors."""

from __future__ import annotations

import ssl

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_hostport(value: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``"host:port"``, ``":port"`` or ``"[::1]:port"`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or default_host, int(port)


def check_hostport(value: str) -> str:
    parse_hostport(value)
    return value


class TLSConfig(Strict):
    """TLS for a listener or a client. Paths may be relative to the working directory."""

    cert: str = Field(description="PEM certificate chain presented by this side.")
    key: str = Field(description="PEM private key (keep it out of the repository).")
    client_ca: str | None = Field(
        None, description="Listener: require client certificates signed by this CA (mutual TLS).")
    ca: str | None = Field(None, description="Client: verify the server against this CA bundle.")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx
