"""Where the FHIR destination's Authorization header comes from: nothing, a token, OAuth2.

``Credentials.header(session)`` gives the header for the next request;
``Credentials.invalidate()`` drops a cached OAuth2 token after a 401 so the
next ``header`` fetches a new one. Errors follow the engine's hierarchy: a
secret that is not set or a client the token endpoint refuses is a
``PeerRejected`` (an operator must act; retrying cannot help), a token
endpoint that is down or busy is transient.
"""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import quote

import aiohttp

from channels.fhir_rest.config import Auth, BearerAuth, OAuth2Auth
from engine.config.secrets import destination_secret
from engine.errors import PeerRejected, PeerTimeout, PeerUnavailable

TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
EXPIRY_MARGIN_SECS = 30.0  # refresh a little early: a token must not expire in flight


class Credentials:
    def __init__(self, config: Auth, timeout_secs: float) -> None:
        self.config = config
        self.timeout_secs = timeout_secs
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0  # OAuth2 tokens fetched (for metrics and tests)

    @property
    def refreshable(self) -> bool:
        return isinstance(self.config, OAuth2Auth)

    def invalidate(self) -> None:
        self._token = None

    async def header(self, session: aiohttp.ClientSession) -> dict[str, str]:
        cfg = self.config
        if isinstance(cfg, BearerAuth):
            return {"Authorization": "Bearer " + destination_secret(cfg.token_env, cfg.token_file,
                                                                    "bearer token")}
        if isinstance(cfg, OAuth2Auth):
            async with self._lock:
                if self._token is None or time.monotonic() >= self._expires:
                    await self._fetch(session, cfg)
                assert self._token is not None
                return {"Authorization": f"Bearer {self._token}"}
        return {}

    async def _fetch(self, session: aiohttp.ClientSession, cfg: OAuth2Auth) -> None:
        secret = destination_secret(cfg.client_secret_env, cfg.client_secret_file, "client secret")
        form = {"grant_type": "client_credentials"}
        if cfg.scope:
            form["scope"] = cfg.scope
        headers = {"Accept": "application/json"}
        if cfg.client_auth == "basic":  # RFC 6749 2.3.1: form-encode, then Basic
            pair = f"{quote(cfg.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form.update(client_id=cfg.client_id, client_secret=secret)
        try:
            async with session.post(cfg.token_url, data=form, headers=headers) as resp:
                body = await resp.read()
                if resp.status in TRANSIENT:
                    raise PeerUnavailable(f"token endpoint: HTTP {resp.status}")
                if resp.status != 200:
                    raise PeerRejected(f"HTTP {resp.status}", "token endpoint refused the "
                                       f"client: {body[:200].decode('utf-8', 'replace')}", body)
                answer = await resp.json(content_type=None)
        except TimeoutError as exc:
            raise PeerTimeout(f"token endpoint: no answer in {self.timeout_secs:g} s") from exc
        except aiohttp.ClientError as exc:
            raise PeerUnavailable(f"token endpoint: {type(exc).__name__}") from exc
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise PeerRejected("token", "token endpoint answered without an access_token")
        lifetime = float(answer.get("expires_in") or 300)
        self._token = token
        self._expires = time.monotonic() + max(lifetime - EXPIRY_MARGIN_SECS, lifetime / 2)
        self.fetched += 1
