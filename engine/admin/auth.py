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

Every user's password and every token must meet one policy (``engine.admin.policy``: at
least 12 characters, not whitespace, not a common or default password, not containing the
name); off loopback the engine refuses to start otherwise, naming the user or token.

Roles: ``admin`` (everything), ``analyst`` (channels, messages with PHI, reprocess,
reload), ``radiologist`` (clinical views with PHI, no message browser), ``viewer``
(read-only, PHI masked), and ``ehr``: a system, not a person, that reads the ``/fhir``
API and nothing else (typically an API token for an EHR that pulls results).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import tomllib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine.admin.policy import guesses, password_problem
from engine.errors import RadbridgeError

ROLES = ("admin", "analyst", "radiologist", "viewer", "ehr")
ALL_ROLES = frozenset(ROLES)
# The people who use the dashboard and the /api: every role but the EHR's system account.
STAFF_ROLES = frozenset(ROLES) - {"ehr"}
TOKEN_PREFIX = "rbt_"
MAX_NAME = 64  # user names are at most this long (checked before any lookup)
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
        self._plain: dict[str, str] = {}  # user -> password we hold in clear, for checks
        if plain_admin is not None:
            self.set_admin_password(*plain_admin)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Directory:
        env = os.environ if environ is None else environ
        users: list[User] = []
        tokens: dict[str, tuple[str, str]] = {}
        if env.get("RADBRIDGE_USERS_FILE"):
            users, tokens = _read_users_file(Path(env["RADBRIDGE_USERS_FILE"]))
        directory = cls(users, tokens)
        plain = _env_password(env)
        if plain is not None:
            directory.set_admin_password(admin_name(env), plain)
        return directory

    def set_admin_password(self, name: str, password: str) -> None:
        """Make *name* an admin with *password* (held in clear only to check the policy)."""
        self.users[name] = User(name, "admin", hash_password(password))
        self._plain[name] = password

    def has_admin(self) -> bool:
        """Whether any user or token has the admin role."""
        return any(u.role == "admin" for u in self.users.values()) or any(
            role == "admin" for _, role in self.tokens.values())

    def token(self, token: str) -> Principal | None:
        """The token's principal. Looked up by its SHA-256, so the lookup's timing tells a
        caller nothing about the tokens themselves."""
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

    def weaknesses(self, thorough: bool = True, probed: set[str] | None = None) -> list[str]:
        """Every credential that breaks the policy (``engine.admin.policy``), naming its
        user or token, never the secret. Passwords held in clear and API tokens (SHA-256:
        cheap to probe) are always checked; *thorough* also tries ``policy.guesses``
        against every scrypt password hash (blocking: tens of milliseconds a guess), except
        those whose ``probe_id`` is in *probed*; the ones found strong now are added to it."""
        found = [] if self.has_admin() else ["no admin user or token is configured"]
        for name, password in sorted(self._plain.items()):
            if (problem := password_problem(name, password)) is not None:
                found.append(f"the password of user {name!r} {problem}")
        for digest, (name, _) in sorted(self.tokens.items(), key=lambda kv: kv[1]):
            if _token_guessed(name, digest):
                found.append(f"the API token {name!r} is a common password or its name")
        if thorough:
            done = set() if probed is None else probed
            hashed = [u for u in self.users.values()
                      if u.name not in self._plain and probe_id(u) not in done]
            with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
                guessed = list(pool.map(_password_guessed, hashed))
            for user, hit in zip(hashed, guessed, strict=True):
                if hit:
                    found.append(f"the password of user {user.name!r} is empty, a common "
                                 "password or its name")
                else:
                    done.add(probe_id(user))
        return found


def admin_name(env: Mapping[str, str]) -> str:
    """The admin user named by ``RADBRIDGE_ADMIN_USER`` (default ``admin``)."""
    return env.get("RADBRIDGE_ADMIN_USER") or "admin"


def probe_id(user: User) -> str:
    """Names one probe of one hash: the same user, hash and guesses give the same id."""
    text = "\0".join([user.name, user.password_hash, *guesses(user.name)])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _read_probed(path: Path) -> set[str]:
    try:
        return set(path.read_text(encoding="ascii").split())
    except (OSError, UnicodeDecodeError):
        return set()  # probe again: it only costs time


def _write_probed(path: Path, ids: set[str]) -> None:
    """Keep the ids of hashes found strong (0600; nothing secret: hashes of hashes)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write("".join(f"{i}\n" for i in sorted(ids)))
        os.replace(tmp, path)
    except OSError:
        pass  # the next start probes again


def _token_guessed(name: str, digest: str) -> bool:
    return any(hash_token(g) == digest for g in guesses(name, thorough=True))


@functools.lru_cache(maxsize=256)
def _guessed_hash(name: str, encoded: str) -> bool:
    return any(verify_password(g, encoded) for g in guesses(name))


def _password_guessed(user: User) -> bool:
    """Whether an obvious guess opens *user*'s scrypt hash (cached: one probe per hash)."""
    return _guessed_hash(user.name, user.password_hash)


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
        if not name or len(str(name)) > MAX_NAME or role not in ALL_ROLES \
                or not str(pw).startswith("scrypt$"):
            raise AdminCredentialsError(f"RADBRIDGE_USERS_FILE user[{i}]: needs a name (at most "
                                        f"{MAX_NAME} characters), a role "
                                        f"({', '.join(ROLES)}) and a scrypt password hash")
        users.append(User(name, role, pw))
    for i, entry in enumerate(doc.get("token", [])):
        name, role, digest = entry.get("name"), entry.get("role"), entry.get("sha256", "")
        if not name or role not in ALL_ROLES or len(str(digest)) != 64:
            raise AdminCredentialsError(f"RADBRIDGE_USERS_FILE token[{i}]: needs a name, a role "
                                        "and the token's sha256 (64 hex digits)")
        tokens[str(digest).lower()] = (name, role)
    return users, tokens


def check_credentials(directory: Directory, host: str,
                      probed_file: Path | None = None) -> list[str]:
    """Refuse (raise) weak credentials off loopback; on loopback return them as warnings.

    One policy (``engine.admin.policy``) for every user and token; off loopback the scrypt
    hashes of the users file are probed too (on loopback that cost is skipped). A hash
    found strong is remembered in *probed_file* and not probed again at the next start."""
    loopback = is_loopback(host)
    probed = _read_probed(probed_file) if probed_file is not None and not loopback else set()
    before = set(probed)
    problems = directory.weaknesses(thorough=not loopback, probed=probed)
    if probed_file is not None and probed != before:
        _write_probed(probed_file, probed)
    if problems and not loopback:
        raise AdminCredentialsError(
            f"refusing to serve the admin API on {host}: " + "; ".join(problems)
            + " (set RADBRIDGE_ADMIN_PASSWORD or RADBRIDGE_USERS_FILE)")
    return problems
