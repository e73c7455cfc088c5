"""STOW-RS destination: stores each Part 10 payload (our SR) on a PACS over DICOMweb.

One POST ``{url}/studies`` per instance, ``multipart/related; type="application/dicom"``,
``Accept: application/dicom+json``, so the PACS's Store Instances Response (PS3.18 10.5.3)
says per instance what happened. The answer decides, by type (``engine.errors``):

===================================  ===================================================
the PACS answered                    ``send``
===================================  ===================================================
200 / 202, the instance referenced   returns the response body (recorded as SENT)
200 / 202 / 409 with a Failed SOP    ``PeerRejected`` naming FailureReason, or
  (FailureReason 0xA7xx)             ``PeerUnavailable``: "out of resources", retry later
409 or another 4xx                   ``PeerRejected`` with the status and the peer's text
408, 429, 5xx                        ``RetryLater`` (retried in order, for ever;
                                       ``Retry-After`` honoured)
no connection, TLS failure           ``PeerUnavailable``
no answer within ``timeout_secs``    ``PeerTimeout``
===================================  ===================================================

Credentials never live in channels.toml: the basic password and the bearer token come
from an environment variable or a file, read at each send (a rotated secret is picked up).
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import uuid
from typing import Literal

import aiohttp
from pydantic import Field, field_validator, model_validator

from engine.config.base import ReadableFile, Strict
from engine.config.secrets import (
    SecretEnv,
    SecretFile,
    destination_secret,
    one_secret,
    secret_env,
    secret_file,
)
from engine.connectors import DestinationBase
from engine.errors import PeerRejected, PeerTimeout, PeerUnavailable, RetryLater
from engine.logs import event
from engine.model import DeliveryRef
from engine.registry import register

log = logging.getLogger("radbridge.dicomweb.stow_out")

FAILED_SOP = "00081198"
REFERENCED_SOP = "00081199"
FAILURE_REASON = "00081197"
SOP_INSTANCE = "00081155"


class StowDestinationConfig(Strict):
    type: Literal["dicomweb_stow"]
    url: str = Field(description="The DICOMweb service root (http://pacs:8042/dicom-web); "
                                 "instances are POSTed to {url}/studies.")
    auth: Literal["none", "basic", "bearer"] = Field(
        "none", description="none, basic (username + password) or bearer (a token).")
    username: str | None = Field(None, description="basic: the user name.")
    password_env: SecretEnv | None = secret_env("the password (auth = basic)")
    password_file: SecretFile | None = secret_file("the password (auth = basic)")
    token_env: SecretEnv | None = secret_env("the bearer token (auth = bearer)")
    token_file: SecretFile | None = secret_file("the bearer token (auth = bearer)")
    ca_file: ReadableFile | None = Field(
        None, description="https: verify the PACS against this CA bundle (default: the "
                          "system's).")
    timeout_secs: float = Field(60, gt=0, description="One store request, end to end.")
    retry_initial_secs: float = Field(1, gt=0)
    retry_max_secs: float = Field(300, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _auth_complete(self) -> StowDestinationConfig:
        if self.auth == "basic" and not self.username:
            raise ValueError("auth = basic needs username")
        one_secret(self, "password", required=self.auth == "basic")
        one_secret(self, "token", required=self.auth == "bearer")
        return self


def multipart_body(payload: bytes) -> tuple[bytes, str]:
    """One-part ``multipart/related`` body and its Content-Type (a boundary not in *payload*)."""
    boundary = uuid.uuid4().hex
    while boundary.encode() in payload:  # pragma: no cover (one chance in 2**122)
        boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def failures(body: bytes) -> list[int | None]:
    """FailureReason of each Failed SOP in a DICOM JSON Store Instances Response."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    if isinstance(doc, list):
        doc = doc[0] if doc else {}
    if not isinstance(doc, dict):
        return []
    reasons: list[int | None] = []
    for item in (doc.get(FAILED_SOP) or {}).get("Value") or []:
        value = ((item or {}).get(FAILURE_REASON) or {}).get("Value") or [None]
        reasons.append(int(value[0]) if isinstance(value[0], int) else None)
    return reasons


@register("destination", "dicomweb_stow", StowDestinationConfig,
          "DICOMweb STOW-RS: store instances on a PACS", sink="dicom")
class StowDestination(DestinationBase):
    """Stores one instance per ``send``; see the module docstring for every outcome."""

    def __init__(self, name: str, config: StowDestinationConfig) -> None:
        self.name = name
        self.config = config
        self.retry_initial_secs = config.retry_initial_secs
        self.retry_max_secs = config.retry_max_secs
        self.endpoint = f"{config.url}/studies"
        self._session: aiohttp.ClientSession | None = None

    async def connect(self) -> None:
        return None  # the session opens on the first send: a PACS down at start-up is fine

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        cfg = self.config
        if cfg.auth == "bearer":
            token = destination_secret(cfg.token_env, cfg.token_file, "STOW bearer token")
            headers["Authorization"] = f"Bearer {token}"
        elif cfg.auth == "basic":
            assert cfg.username is not None
            password = destination_secret(cfg.password_env, cfg.password_file, "STOW password")
            pair = base64.b64encode(f"{cfg.username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"  # aiohttp.BasicAuth is deprecated
        return headers

    def _session_for(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = True
            if self.config.ca_file:
                ssl_ctx = ssl.create_default_context(cafile=self.config.ca_file)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_secs),
                connector=aiohttp.TCPConnector(ssl=ssl_ctx))
        return self._session

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        body, content_type = multipart_body(payload)
        headers = self._headers(content_type)
        try:
            async with self._session_for().post(self.endpoint, data=body,
                                                headers=headers) as resp:
                answer = await resp.read()
                status, after = resp.status, resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise PeerTimeout(f"no STOW answer from {self.config.url} in "
                              f"{self.config.timeout_secs:g} s") from exc
        except aiohttp.ClientError as exc:
            raise PeerUnavailable(f"{self.config.url}: {type(exc).__name__}") from exc
        return self._judge(status, answer, after)

    def _judge(self, status: int, answer: bytes, after: str | None = None) -> bytes:
        failed = failures(answer)
        if failed:
            reason = failed[0]
            text = f"FailureReason 0x{reason:04X}" if reason is not None else "failed SOP"
            event(log, "WEB-371", "PACS refused the instance", destination=self.name,
                  http=status, reason=text)
            if reason is not None and reason & 0xFF00 == 0xA700:
                raise PeerUnavailable(f"HTTP {status}: {text} (out of resources, retry later)")
            raise PeerRejected(f"HTTP {status}", text, answer)
        if status in (200, 202):
            return answer or f"HTTP {status}".encode()
        text = " ".join(answer[:400].decode("utf-8", "replace").split())[:200]
        if status >= 500 or status in (408, 429):
            raise RetryLater.from_header(f"HTTP {status}: {text}", after)
        event(log, "WEB-372", "PACS rejected the store request", destination=self.name,
              http=status)
        raise PeerRejected(f"HTTP {status}", text, answer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

