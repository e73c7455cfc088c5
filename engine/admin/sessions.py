"""Dashboard sessions (cookie) and a brake on password guessing.

A session is a random token in an HttpOnly, SameSite=Strict cookie; the server
keeps only its SHA-256. Requests that change something with a session cookie
must also carry the session's CSRF token in ``X-CSRF-Token`` (API tokens do not:
they are never sent by a browser on its own).
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


class LoginThrottle:
    """After ``max_failures`` wrong passwords for one name within ``window_secs``, refuse
    further attempts for that name until the window has passed."""

    def __init__(self, max_failures: int = 5, window_secs: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window_secs = window_secs
        self._failures: dict[str, list[float]] = {}

    def retry_after(self, name: str) -> float:
        """Seconds to wait before *name* may try again (0: go ahead)."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(name, []) if now - t < self.window_secs]
        self._failures[name] = recent
        if len(recent) < self.max_failures:
            return 0.0
        return max(0.0, self.window_secs - (now - recent[0]))

    def failed(self, name: str) -> None:
        self._failures.setdefault(name, []).append(time.monotonic())
        if len(self._failures) > 10_000:  # bounded: forget the oldest names
            for key in list(self._failures)[:1000]:
                del self._failures[key]

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
