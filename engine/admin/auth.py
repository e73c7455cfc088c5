"""Users, API tokens and roles for the admin API. Secrets come from the environment or files.

Where credentials come from (never from channels.toml):

* ``RADBRIDGE_ADMIN_PASSWORD`` or ``RADBRIDGE_ADMIN_PASSWORD_FILE``: the password of
  one admin user, named by ``RADBRIDGE_ADMIN_USER`` (default ``admin``).
* ``RADBRIDGE_USERS_FILE``: a TOML file of users with scrypt password hashes and of
  API tokens stored as SHA-256 hashes::

      [[user]]
      name = "alice"
      role = "analyst"
      password = "scrypt$16384$8$1$<salt>$<hash>"   # python -m engine.admin hash-password

      [[token]]
      name = "prometheus"
      role = "viewer"
      sha256 = "<hex>"                                # python -m engine.admin new-token

Roles: ``admin`` (everything), ``analyst`` (channels, messages with PHI, reprocess,
reload), ``radiologist`` (clinical views with PHI, no message browser), ``viewer``
(read-only, PHI masked), and ``ehr``: a system, not a person, that reads the ``/fhir``
API and nothing else (typically an API token for an EHR that pulls results).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RadbridgeError

ROLES = ("admin", "analyst", "radiologist", "viewer", "ehr")
ALL_ROLES = frozenset(ROLES)
# The people who use the dashboard and the /api: every role but the EHR's system account.
STAFF_ROLES = frozenset(ROLES) - {"ehr"}
DEFAULT_PASSWORDS = frozenset({"", "admin", "administrator", "password", "changeme", "change-me",
                               "radbridge", "secret", "default", "123456", "12345678", "root"})
TOKEN_PREFIX = "rbt_"
_SCRYPT = (2**14, 8, 1)  # n, r, p: ~16 MiB and some tens of ms per check


class AdminCredentialsError(RadbridgeError):
    """The admin listener would be reachable from the network with weak credentials."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user (logged in) or an API token, with one role."""

    name: str
    role: str
    via: str  # "session" | "token"

    @property
    def masked(self) -> bool:
        """Viewers never see PHI."""
        return self.role == "viewer"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str


def hash_password(password: str, *, n: int = _SCRYPT[0], r: int = _SCRYPT[1],
                  p: int = _SCRYPT[2]) -> str:
    """``scrypt$n$r$p$salt$hash`` (salt and hash base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20,
                            dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Check *password* against a ``hash_password`` string (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=64 * 2**20, dklen=32)
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def hash_token(token: str) -> str:
    """Tokens are long random strings: one SHA-256 is enough to keep them out of files."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Directory:
    """Every user and token the admin API knows, loaded once at start."""

    def __init__(self, users: list[User] | None = None,
                 tokens: Mapping[str, tuple[str, str]] | None = None,
                 plain_admin: tuple[str, str] | None = None) -> None:
        self.users = {u.name: u for u in users or []}
        self.tokens = dict(tokens or {})  # sha256 hex -> (name, role)
        self._plain_admin = plain_admin  # (user, password) from the environment, for checks

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Directory:
        env = os.environ if environ is None else environ
        users: list[User] = []
        tokens: dict[str, tuple[str, str]] = {}
        if env.get("RADBRIDGE_USERS_FILE"):
            users, tokens = _read_users_file(Path(env["RADBRIDGE_USERS_FILE"]))
        plain = _env_password(env)
        if plain is not None:
            name = env.get("RADBRIDGE_ADMIN_USER") or "admin"
            users = [u for u in users if u.name != name]
            users.append(User(name, "admin", hash_password(plain)))
            return cls(users, tokens, (name, plain))
        return cls(users, tokens)

    def token(self, token: str) -> Principal | None:
        found = self.tokens.get(hash_token(token))
        return Principal(found[0], found[1], "token") if found else None

    def login(self, name: str, password: str) -> Principal | None:
        """Check a password (blocking: scrypt; call it in a thread)."""
        user = self.users.get(name)
        if user is None:
            verify_password(password, _DUMMY_HASH)  # same cost whether or not the user exists
            return None
        return Principal(user.name, user.role, "session") \
            if verify_password(password, user.password_hash) else None

    def weaknesses(self, thorough: bool = True) -> list[str]:
        """What makes the admin credentials unsafe off loopback. *thorough* also tries the
        default passwords against every hashed admin password (blocking: scrypt)."""
        admins = [u for u in self.users.values() if u.role == "admin"]
        if not admins and not any(role == "admin" for _, role in self.tokens.values()):
            return ["no admin user or token is configured"]
        found = []
        if self._plain_admin is not None:
            name, password = self._plain_admin
            if password.lower() in DEFAULT_PASSWORDS or password == name:
                found.append(f"the password of admin user {name!r} is a default one")
        for user in admins if thorough else []:
            if (self._plain_admin is None or user.name != self._plain_admin[0]) and any(
                    verify_password(p, user.password_hash) for p in {*DEFAULT_PASSWORDS,
                                                                     user.name}):
                found.append(f"the password of admin user {user.name!r} is empty or a default")
        return found


_DUMMY_HASH = hash_password("not a password", n=2**14)


def _env_password(env: Mapping[str, str]) -> str | None:
    if env.get("RADBRIDGE_ADMIN_PASSWORD_FILE"):
        path = Path(env["RADBRIDGE_ADMIN_PASSWORD_FILE"])
        try:
            return path.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise AdminCredentialsError(f"cannot read RADBRIDGE_ADMIN_PASSWORD_FILE: "
                                        f"{exc.strerror}") from exc
    return env.get("RADBRIDGE_ADMIN_PASSWORD")


def _read_users_file(path: Path) -> tuple[list[User], dict[str, tuple[str, str]]]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AdminCredentialsError(f"cannot read RADBRIDGE_USERS_FILE: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AdminCredentialsError(f"RADBRIDGE_USERS_FILE is not valid TOML: {exc}") from exc
    users, tokens = [], {}
    for i, entry in enumerate(doc.get("user", [])):
        name, role, pw = entry.get("name"), entry.get("role"), entry.get("password", "")
        if not name or role not in ALL_ROLES or not str(pw).startswith("scrypt$"):
            raise AdminCredentialsError(f"RADBRIDGE_USERS_FILE user[{i}]: needs a name, a role "
                                        f"({', '.join(ROLES)}) and a scrypt password hash")
        users.append(User(name, role, pw))
    for i, entry in enumerate(doc.get("token", [])):
        name, role, digest = entry.get("name"), entry.get("role"), entry.get("sha256", "")
        if not name or role not in ALL_ROLES or len(str(digest)) != 64:
            raise AdminCredentialsError(f"RADBRIDGE_USERS_FILE token[{i}]: needs a name, a role "
                                        "and the token's sha256 (64 hex digits)")
        tokens[str(digest).lower()] = (name, role)
    return users, tokens


def check_credentials(directory: Directory, host: str) -> list[str]:
    """Refuse (raise) weak credentials off loopback; on loopback return them as warnings."""
    loopback = is_loopback(host)
    problems = directory.weaknesses(thorough=not loopback)
    if problems and not loopback:
        raise AdminCredentialsError(
            f"refusing to serve the admin API on {host}: " + "; ".join(problems)
            + " (set RADBRIDGE_ADMIN_PASSWORD or RADBRIDGE_USERS_FILE)")
    return problems
