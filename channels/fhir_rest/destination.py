"""FHIR REST destination: POSTs each transaction Bundle to the server's base URL.

Outcomes of ``send`` (the DeliveryWorker decides retry-or-fail by type)::

    2xx                        sent; the transaction-response Bundle is the response kept
    401 (OAuth2)               the cached token is dropped and a new one fetched, once;
                               a second 401 is a rejection
    408 429 502 503 504        RetryLater (transient), ``retry_after`` from Retry-After
    connection failure, TLS    PeerUnavailable (transient)
    no answer in timeout_secs  PeerTimeout (transient)
    other 4xx, 500 ...         PeerRejected with the OperationOutcome's diagnostics

500 is a rejection, not a retry: a FHIR server answers 500 to a transaction
it could not process (a bug or a data problem on its side), and repeating the
same Bundle blocks the queue forever. Conditional creates make a resend
harmless, so an operator can reprocess once the server is fixed.
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any

import aiohttp

from channels.fhir_rest.auth import Credentials
from channels.fhir_rest.config import FhirRestConfig
from engine.connectors import DestinationBase
from engine.errors import PeerRejected, PeerTimeout, PeerUnavailable, RetryLater
from engine.logs import event
from engine.model import DeliveryRef
from engine.registry import register

log = logging.getLogger("radbridge.fhir_rest")
FHIR_JSON = "application/fhir+json"
RETRYABLE = frozenset({408, 429, 502, 503, 504})


def outcome_text(body: bytes) -> str:
    """The diagnostics of an OperationOutcome (every issue), else the start of the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in doc.get("issue") or []:
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            where = ", ".join(issue.get("expression") or issue.get("location") or [])
            texts.append(" ".join(x for x in (f"{issue.get('severity', '')}:"
                                              f" {text or issue.get('code', '')}",
                                              f"({where})" if where else "") if x))
        if texts:
            return "; ".join(texts)
    return body[:300].decode("utf-8", "replace")


@register("destination", "fhir_rest", FhirRestConfig,
          "FHIR R4 REST server: transaction Bundles", sink="fhir")
class FhirRestDestination(DestinationBase):
    def __init__(self, name: str, config: FhirRestConfig) -> None:
        self.name = name
        self.config = config
        self.retry_initial_secs = config.retry_initial_secs
        self.retry_max_secs = config.retry_max_secs
        self.credentials = Credentials(config.auth, config.timeout_secs)
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.config.tls_verify:
            return False
        ctx = ssl.create_default_context(cafile=self.config.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    async def connect(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl()),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_secs))

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        await self.connect()
        assert self._session is not None
        status, body, headers = await self._post(payload)
        if status == 401 and self.credentials.refreshable:
            event(log, "FHR-301", "token refused, fetching a new one", destination=self.name)
            self.credentials.invalidate()
            status, body, headers = await self._post(payload)
        if 200 <= status < 300:
            return body or f"HTTP {status}".encode()
        text = outcome_text(body)
        if status in RETRYABLE:
            raise RetryLater.from_header(f"HTTP {status}: {text}", headers.get("Retry-After"))
        event(log, "FHR-410", "server rejected the bundle", destination=self.name,
              status=status)
        raise PeerRejected(f"HTTP {status}", text, body)

    async def _post(self, payload: bytes) -> tuple[int, bytes, Any]:
        assert self._session is not None
        url = self.config.base_url
        try:
            headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON,
                       **await self.credentials.header(self._session)}
            async with self._session.post(url, data=payload, headers=headers) as resp:
                return resp.status, await resp.read(), resp.headers
        except TimeoutError as exc:
            raise PeerTimeout(f"no answer from {url} in {self.config.timeout_secs:g} s"
                              ) from exc
        except aiohttp.ClientError as exc:
            raise PeerUnavailable(f"{url}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
