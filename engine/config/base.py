"""Building blocks shared by the config models of the engine and of connectors."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo


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


# Validation context key: ``{CHECK_FILES: False}`` skips the file checks (documentation
# examples name files that exist only on the machine that runs them).
CHECK_FILES = "check_files"


def check_readable_file(value: str) -> str:
    """*value* if it names a regular file this process can open for reading, else ValueError.

    Relative paths are relative to the working directory, as when the file is used. The
    message names the path and what is wrong (missing, a directory, permission denied).
    """
    path = Path(value)
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise ValueError(f"file not found: {value}") from None
    except IsADirectoryError:
        raise ValueError(f"not a file: {value}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise ValueError(f"not a regular file: {value}")
    return value


def _readable_file(value: str, info: ValidationInfo) -> str:
    if isinstance(info.context, dict) and info.context.get(CHECK_FILES) is False:
        return value
    return check_readable_file(value)


ReadableFile = Annotated[str, AfterValidator(_readable_file)]
"""A config key naming a file read at start-up (TLS certificates, keys, CA bundles, secrets):
lint reports a missing or unreadable file as ``file:line: key: message``."""


class TLSConfig(Strict):
    """TLS for a listener or a client. Paths may be relative to the working directory; lint
    checks that each file exists and is readable."""

    cert: ReadableFile = Field(description="PEM certificate chain presented by this side.")
    key: ReadableFile = Field(description="PEM private key (keep it out of the repository).")
    client_ca: ReadableFile | None = Field(
        None, description="Listener: require client certificates signed by this CA (mutual TLS).")
    ca: ReadableFile | None = Field(
        None, description="Client: verify the server against this CA bundle.")

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
