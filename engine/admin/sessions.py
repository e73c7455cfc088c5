"""Dashboard sessions (cookie); the brake on password guessing is ``engine.admin.throttle``.

A session is a random token in an HttpOnly, SameSite=Strict cookie; the server
keeps only its SHA-256. Requests that change something with a session cookie
must also carry the session's CSRF token in ``X-CSRF-Token`` (API tokens do not:
they are never sent by a browser on its own), compared in constant time. Sessions are
looked up by the SHA-256 of the cookie, so lookup timing says nothing about live cookies.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from engine.admin.auth import Principal

COOKIE = "radbridge_session"


@dataclass(slots=True)
class Session:
    principal: Principal
    csrf: str
    created: float
    seen: float


class SessionStore:
    """In-memory sessions: a restart logs everyone out, which is fine for a dashboard."""

    def __init__(self, idle_secs: float, max_secs: float) -> None:
        self.idle_secs = idle_secs
        self.max_secs = max_secs
        self._sessions: dict[str, Session] = {}

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def create(self, principal: Principal) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown once) and the session."""
        self._expire(time.monotonic())
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(principal, secrets.token_urlsafe(24), now, now)
        self._sessions[self._key(token)] = session
        return token, session

    def get(self, token: str) -> Session | None:
        """The live session of a cookie value (touching it), or None."""
        key = self._key(token)
        session = self._sessions.get(key)
        now = time.monotonic()
        if session is None:
            return None
        if now - session.seen > self.idle_secs or now - session.created > self.max_secs:
            del self._sessions[key]
            return None
        session.seen = now
        return session

    def drop(self, token: str) -> None:
        self._sessions.pop(self._key(token), None)

    def _expire(self, now: float) -> None:
        dead = [k for k, s in self._sessions.items()
                if now - s.seen > self.idle_secs or now - s.created > self.max_secs]
        for key in dead:
            del self._sessions[key]
