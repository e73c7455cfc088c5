"""Webhook destination: POSTs each payload (a JSON alert) to a URL.

Used for critical-finding alerts (a paging system, a chat bridge). The body can
be signed with HMAC-SHA256 (``X-Radbridge-Signature: sha256=<hex>``) with a
secret read from the environment or a file, never from channels.toml.
2xx is sent; 408, 429 and every 5xx are retried in order (``Retry-After``
honoured); any other status is a rejection recorded with the peer's answer.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

import aiohttp
from pydantic import Field, field_validator, model_validator

from engine.config.base import Strict
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
from engine.model import DeliveryRef
from engine.registry import register

RETRYABLE = frozenset({408, 429})  # and every 5xx


class WebhookDestinationConfig(Strict):
    type: Literal["webhook"]
    url: str = Field(description="http(s) URL the JSON is POSTed to.")
    secret_env: SecretEnv | None = secret_env("the HMAC secret that signs each body")
    secret_file: SecretFile | None = secret_file("the HMAC secret")
    timeout_secs: float = Field(10, gt=0)
    retry_initial_secs: float = Field(0.5, gt=0)
    retry_max_secs: float = Field(60, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one(self) -> WebhookDestinationConfig:
        one_secret(self, "secret", required=False)
        return self


@register("destination", "webhook", WebhookDestinationConfig,
          "JSON alerts POSTed to a URL (HMAC-signed)", sink="json")
class WebhookDestination(DestinationBase):
    def __init__(self, name: str, config: WebhookDestinationConfig) -> None:
        self.name = name
        self.config = config
        self.retry_initial_secs = config.retry_initial_secs
        self.retry_max_secs = config.retry_max_secs
        self._session: aiohttp.ClientSession | None = None

    def _secret(self) -> bytes | None:
        cfg = self.config
        if not (cfg.secret_env or cfg.secret_file):
            return None
        return destination_secret(cfg.secret_env, cfg.secret_file, "webhook secret").encode()

    async def connect(self) -> None:
        """Open the HTTP session (no request is made: a peer down at start-up is fine)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_secs))

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        headers = {"Content-Type": "application/json"}
        secret = self._secret()
        if secret is not None:
            digest = hmac.new(secret, payload, hashlib.sha256).hexdigest()
            headers["X-Radbridge-Signature"] = f"sha256={digest}"
        await self.connect()
        assert self._session is not None
        try:
            async with self._session.post(self.config.url, data=payload,
                                          headers=headers) as resp:
                body = await resp.read()
                if 200 <= resp.status < 300:
                    return body or f"HTTP {resp.status}".encode()
                text = body[:200].decode("utf-8", "replace")
                if resp.status in RETRYABLE or resp.status >= 500:
                    raise RetryLater.from_header(f"HTTP {resp.status}: {text}",
                                                 resp.headers.get("Retry-After"))
                raise PeerRejected(f"HTTP {resp.status}", text, body)
        except TimeoutError as exc:
            raise PeerTimeout(f"no answer from {self.config.url} in "
                              f"{self.config.timeout_secs:g} s") from exc
        except aiohttp.ClientError as exc:
            raise PeerUnavailable(f"{self.config.url}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
