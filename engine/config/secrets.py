"""Secrets in channels.toml: references only, never values.

A connector (or any section) that needs a secret declares two keys, ``<name>_env`` (the
name of an environment variable) and ``<name>_file`` (a file holding the secret), typed
``SecretEnv`` and ``SecretFile``, and checks the pair with ``one_secret``. The config
keeps the *reference*; the value is read by ``read_secret`` when it is used (so a
rotated file is picked up) and never stored on a model, so ``model_dump`` and
``GET /api/config`` cannot show it.

Three rules, all reported as ``file:line: key: message``:

* ``clear_secret_problems`` (run by lint on the raw document, every section): a key whose
  name looks like a secret (``password``, ``token``, ``client_secret``, ``api_key`` ...)
  given in clear is refused, naming ``<key>_env`` / ``<key>_file``; so is a URL that
  carries a password (``postgresql://user:pass@host``).
* ``SecretEnv``: when validated with ``RESOLVE`` in the context (loading to run, lint),
  the variable must be set and not blank.
* ``SecretFile``: likewise, the file must exist, be readable and not be empty.

Programmatic construction (tests, ``radbridge list``) passes no context and checks only
the shape, so a model can be built before its environment is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from engine.config.base import check_readable_file
from engine.errors import ConfigProblem, PeerRejected, RadbridgeError

RESOLVE = {"resolve_secrets": True}
"""Validation context that makes ``SecretEnv`` / ``SecretFile`` check the machine."""

_SECRET_NAME = re.compile(
    r"(?:^|[_-])(?:password|passwd|pwd|passphrase|secret|token|api_?key|apikey|"
    r"private_?key|access_?key|credential)s?$", re.IGNORECASE)
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

DocPath = tuple[str | int, ...]


class SecretUnavailable(RadbridgeError):
    """A secret named in channels.toml cannot be read now (variable unset, file gone).

    Callers turn it into their own outcome: a destination records ``PeerRejected``
    (an operator must act; retrying cannot help), a model fails to load."""


def looks_secret(key: str) -> bool:
    """True for key names that hold a secret in clear (``password``, ``client_secret``,
    ``api_key`` ...); ``password_env`` and ``password_file`` are references, not secrets."""
    return bool(_SECRET_NAME.search(key))


def url_has_password(value: str) -> bool:
    """True for a URL with a password in its user part (``scheme://user:pass@host``) or
    in its query (``?password=...``, ``?token=...``)."""
    if "://" not in value:
        return False
    try:
        parts = urlsplit(value.strip())
        return bool(parts.password) or any(looks_secret(k) and v for k, v
                                           in parse_qsl(parts.query, keep_blank_values=True))
    except ValueError:
        return False


def _resolving(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("resolve_secrets"))


def _env_is_set(value: str, info: ValidationInfo) -> str:
    if _resolving(info) and not os.environ.get(value, "").strip():
        raise PydanticCustomError("secret_env", "environment variable ${name} is not set "
                                  "(or is blank)", {"name": value})
    return value


def check_readable_secret_file(path: str) -> str | None:
    """Why the secret file *path* cannot be used, or None when it is a readable, non-empty
    regular file (readability is ``engine.config.base.check_readable_file``'s rule, the one
    every file a config names follows)."""
    try:
        check_readable_file(path)
        data = Path(path).read_bytes()
    except ValueError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if not data.strip():
        return f"{path} is empty"
    return None


def _file_is_readable(value: str, info: ValidationInfo) -> str:
    if _resolving(info):
        problem = check_readable_secret_file(value)
        if problem:
            raise PydanticCustomError("secret_file", "{problem}", {"problem": problem})
    return value


SecretEnv = Annotated[str, Field(pattern=_ENV_NAME), AfterValidator(_env_is_set)]
"""The name of an environment variable holding a secret (set when loading to run)."""

SecretFile = Annotated[str, Field(min_length=1), AfterValidator(_file_is_readable)]
"""A file holding a secret (readable and not empty when loading to run)."""


def secret_env(what: str) -> Any:
    """The ``Field`` of a ``<name>_env`` key, documented."""
    return Field(None, description=f"Environment variable holding {what} (never the value "
                                   "itself in channels.toml).")


def secret_file(what: str) -> Any:
    """The ``Field`` of a ``<name>_file`` key, documented."""
    return Field(None, description=f"...or a file holding {what} (read at each use, so a "
                                   "rotated secret is picked up).")


def one_secret(model: BaseModel, name: str, required: bool = True) -> None:
    """Check that *model* sets exactly one (or, not *required*, at most one) of
    ``<name>_env`` and ``<name>_file``; raise ``ValueError`` otherwise."""
    env, file = getattr(model, f"{name}_env"), getattr(model, f"{name}_file")
    if env and file:
        raise ValueError(f"set only one of {name}_env and {name}_file")
    if required and not (env or file):
        raise ValueError(f"set exactly one of {name}_env and {name}_file")


def read_secret(env: str | None, file: str | None, what: str) -> str:
    """The secret from ``$env`` or *file*, stripped; ``SecretUnavailable`` naming the
    reference (never a value) when it is unset, unreadable or empty."""
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise SecretUnavailable(f"{what}: ${env} is not set")
        return value
    if not file:
        raise SecretUnavailable(f"{what}: no {what} is configured")
    try:
        value = Path(file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretUnavailable(f"{what}: cannot read {file}: {reason}") from exc
    if not value:
        raise SecretUnavailable(f"{what}: {file} is empty")
    return value


def destination_secret(env: str | None, file: str | None, what: str) -> str:
    """``read_secret`` for a destination's send: a secret that cannot be read is
    ``PeerRejected("config", ...)``, recorded as ERROR (an operator must act)."""
    try:
        return read_secret(env, file, what)
    except SecretUnavailable as exc:
        raise PeerRejected("config", str(exc)) from exc


def _walk(node: Any, path: DocPath) -> Iterator[tuple[DocPath, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key), value
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*path, i), value
            yield from _walk(value, (*path, i))


def key_path(path: DocPath) -> str:
    """``("channel", 0, "source", "password")`` -> ``channel[0].source.password``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _hint(path: DocPath) -> str:
    key = str(path[-1])
    if path[0] == "admin":
        return ("set RADBRIDGE_ADMIN_PASSWORD (or _FILE) or RADBRIDGE_USERS_FILE "
                "(see the README)")
    return f"use {key}_env (an environment variable) or {key}_file (a file) instead"


def _url_hint(path: DocPath) -> str:
    if path == ("store", "url"):
        return ("leave it out of the URL: the PostgreSQL driver reads PGPASSWORD, "
                "or PGPASSFILE / ~/.pgpass")
    return "leave it out of the URL: use the section's *_env or *_file keys"


def clear_secret_problems(doc: dict[str, Any], line_of: Any, file: str) -> list[ConfigProblem]:
    """Every secret given in clear in *doc*, any section: secret-looking keys with a
    value, and URLs with a password. ``line_of(path)`` gives a path's line."""
    problems = []
    for path, value in _walk(doc, ()):
        key = path[-1]
        if isinstance(key, str) and looks_secret(key) and value not in (None, ""):
            problems.append(ConfigProblem(file, line_of(path), key_path(path),
                                          f"a secret does not belong in channels.toml: "
                                          f"{_hint(path)}"))
        elif isinstance(value, str) and url_has_password(value):
            problems.append(ConfigProblem(file, line_of(path), key_path(path),
                                          f"a password inside a URL: {_url_hint(path)}"))
    return problems


_REDACTED = "(redacted)"


def redact(node: Any) -> Any:
    """A copy of a config dump with any secret-looking value and URL password replaced:
    a belt for ``GET /api/config``, since lint already refuses both."""
    if isinstance(node, dict):
        return {k: (_REDACTED if looks_secret(str(k)) and v not in (None, "") else redact(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v) for v in node]
    if isinstance(node, str) and url_has_password(node):
        return _REDACTED
    return node
