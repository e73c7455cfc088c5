"""channels.toml: typed models, loading, and lint that reports every problem at once.

Problems are reported as ``file:line: key: message``. Field-level problems
come from pydantic; topology problems (duplicate names, two listeners on one
port, references to unknown channels or models) from ``engine.config.topology``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from engine import registry
from engine.config.base import CHECK_FILES, Strict, TLSConfig, check_hostport, parse_hostport
from engine.config.inference import ModelConfig, RouteConfig
from engine.config.lookups import LookupConfig, LookupTable
from engine.config.results import EscalationRule
from engine.config.secrets import RESOLVE, clear_secret_problems
from engine.config.tomlindex import index_lines, line_for
from engine.errors import ConfigErrors, ConfigProblem
from engine.httplimits import HTTPLimitsConfig


class StoreConfig(Strict):
    url: str = Field("sqlite:///var/radbridge.db",
                     description="sqlite:///relative/path, sqlite:////abs/path or postgresql://…")


class EngineSection(Strict):
    app_name: str = Field("RADBRIDGE", description="Our MSH-3 in ACKs and messages we build.")
    facility: str = Field("", description="Our MSH-4.")
    data_dir: str = Field("var", description="Where DICOM instances and outputs are kept.")
    unmatched_after_secs: float = Field(
        3600, gt=0, description="Orders and studies unmatched this long are listed as unmatched.")
    instance_retention_days: float | None = Field(
        None, gt=0, description="Delete instance files older than this (None: keep).")
    message_retention_days: float | None = Field(
        None, gt=0, description="Delete final messages (raw, layers, deliveries) received "
                                "longer ago than this; unfinished ones stay however old "
                                "(None: keep).")
    message_archive_dir: str | None = Field(
        None, description="Before deleting, write those messages to one gzip JSON-lines file "
                          "per run in this directory (relative to the working directory, like "
                          "data_dir). It holds patient data: mode 0600.")
    stalled_queue_secs: float = Field(
        300, gt=0, description="A destination queue whose head has not moved for this long "
                               "is stalled: /ready answers 503 naming it and /metrics sets "
                               "radbridge_queue_stalled; an operator can skip the head "
                               "(radbridge deliveries skip).")
    signal_poll_secs: float = Field(
        1.0, gt=0, description="How often the engine looks for changes other processes made "
                               "(`radbridge studies complete`, `messages reprocess`); on "
                               "PostgreSQL a NOTIFY also wakes it at once.")
    pipeline_workers: int | None = Field(
        None, ge=0, description="Processes that run the channels' processing (mapping, the "
                                "analyst steps, results building) off the event loop that "
                                "reads frames and answers ACKs. Default: one less than the "
                                "CPUs, at least 1; 0 runs it in threads of the engine's own "
                                "process (debugging: the ACK path then competes with it).")
    max_segments: int = Field(
        50_000, gt=0, description="A message with more segments ends ERROR, naming the count, "
                                  "before anything parses it: its cost is bounded.")
    max_fields: int = Field(
        1_000_000, gt=0, description="Likewise for its fields (field separators).")
    inference: Literal["local", "workers"] = Field(
        "local", description="local: this process runs the models; workers: it only routes "
                             "cases into the job queue, and `radbridge worker` processes (on "
                             "GPU hosts, same store) claim and run the jobs.")


class DuplicatesConfig(Strict):
    window_secs: float = Field(0, ge=0, description="Look back this long for a repeated MSH-10; "
                                                    "0 turns the check off.")
    action: Literal["flag", "reject"] = Field(
        "flag", description="flag: accept and mark duplicate; reject: answer AR (205).")


class ForwardRoute(Strict):
    """A ``forward_to`` entry sent to only when its rule passes (``engine.config.rules``)."""

    to: str = Field(description="The destination channel.")
    when: Any = Field(description="A rule (field and operator, not, all, any, expr) or a CEL "
                                  "expression string; the message goes to *to* when it passes.")


MESSAGE_TYPE = re.compile(r"^[A-Z][A-Z0-9]{2}(\^[A-Z0-9]{3})?$")


def _union(kind: registry.Kind) -> Any:
    models = tuple(spec.config for spec in registry.connectors(kind))
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


def _processors() -> tuple[Any, str]:
    """The ``process`` names registered (as a Literal, so lint names them) and their doc."""
    specs = registry.processors()
    names = tuple(spec.name for spec in specs)
    doc = "; ".join(f"{spec.name}: {spec.summary}" for spec in specs) + "."
    return Literal[names], doc  # type: ignore[valid-type]


class ChannelFields(Strict):
    """A ``[[channel]]`` as the code reads it: ``ChannelConfig`` (made at import, below) is
    this with ``source``, ``destination`` and ``process`` narrowed to what is registered."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$",
                      description="Unique, lower-case; used in URLs and the CLI.")
    description: str = ""
    enabled: bool = True
    source: Any = None
    destination: Any = None
    accept: list[str] | None = Field(
        None, description='Message types answered AA, e.g. ["ADT^A01", "ORM^O01"]; '
                          "others get AR. Absent: accept all.")
    ack: Literal["after_store"] = "after_store"
    forward_to: list[str | ForwardRoute] = Field(
        default_factory=list, description='Destination channels fed by this one: a name, '
        'or { to = "name", when = <rule> } to send only what passes the rule.')
    filter: Any = Field(
        None, description="Rules a message must pass before it is processed (a rule or a "
                          "list of rules: field tests, not, all, any, expr in CEL); one "
                          "that does not pass ends FILTERED, naming the rule. On a "
                          "destination channel: only that delivery is dropped.")
    transform: Any = Field(
        None, description="Ordered steps that change the message (set, copy, map, delete, "
                          "add_segment, move, format_date, replace, upper, lower, script; "
                          "see README \"Transformers\"): after the filter, before the "
                          "processor; on a destination channel, on each payload queued "
                          "for it.")
    key: Literal["patient_id", "none"] = Field(
        "patient_id", description="Order is kept per key; different keys run in parallel.")
    duplicates: DuplicatesConfig = DuplicatesConfig()
    empty_control_id: Literal["reject", "generate"] = Field(
        "reject", description="A message with an empty MSH-10: reject answers AR (101); "
                              "generate accepts it with a control id made from its bytes, "
                              "flagged, the ACK's MSA-2 echoing the empty MSH-10.")
    batch_ack: Literal["batch", "per_message"] = Field(
        "batch", description="A frame holding a batch of messages (HL7 FHS/BHS): each "
                             "message is stored as its own; batch answers with one batch "
                             "of their ACKs once all are stored; per_message with each ACK "
                             "as its own frame, in order.")
    study_quiet_secs: float = Field(
        30, gt=0, description="DICOM sources: a study is complete after this long without "
                              "a new instance (or when an order says CM, or on demand).")
    process: str = "forward"
    map: dict[str, Any] | None = Field(
        None, description='process = "orders": where this site keeps each mapped value, '
        'e.g. { accession = ["OBR-20", "OBR-18!"] }; each list is tried in order, the '
        "first non-empty value wins; keys left out keep the defaults.")
    values: dict[str, Any] | None = Field(
        None, description='process = "orders": value maps applied after reading, e.g. '
        '{ priority = { STAT = "S", "1" = "S" } }.')

    @property
    def destinations(self) -> list[str]:
        """The names of the destination channels in ``forward_to``."""
        return [t if isinstance(t, str) else t.to for t in self.forward_to]


def _channel_model() -> type[ChannelFields]:
    source_t = _union("source")
    dest_t = _union("destination")
    process_t, process_doc = _processors()

    class ChannelConfig(ChannelFields):
        source: source_t | None = None  # type: ignore[valid-type]
        destination: dest_t | None = None  # type: ignore[valid-type]
        process: process_t = Field(  # type: ignore[valid-type]
            "forward", description=process_doc)

    return ChannelConfig


if TYPE_CHECKING:
    ChannelConfig = ChannelFields
else:
    ChannelConfig = _channel_model()

# Secret-looking keys (password, token ...) are refused in every section by
# engine.config.secrets; these name admin credentials without looking like secrets.
_CREDENTIAL_KEYS = frozenset({"users", "user"})


def check_public_url(value: str) -> str:
    """An absolute http(s) URL with a host and nothing after the path; no trailing slash."""
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("must be an absolute http:// or https:// URL with a host")
    if url.query or url.fragment or url.username or url.password:
        raise ValueError("must not carry a query, a fragment or credentials")
    try:
        url.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"has a bad port: {exc}") from None
    return value.rstrip("/")


class AdminConfig(HTTPLimitsConfig):
    """The admin API, dashboard and /metrics. Users and tokens never live here: they come
    from RADBRIDGE_ADMIN_PASSWORD(_FILE) and RADBRIDGE_USERS_FILE (see the README)."""

    enabled: bool = Field(True, description="Serve the admin API and dashboard.")
    listen: str = Field("127.0.0.1:8080", description="host:port of the admin HTTP(S) listener; "
                        "a non-loopback address needs strong admin credentials.")
    tls: TLSConfig | None = Field(None, description="Serve HTTPS with this certificate.")
    audit_path: str | None = Field(
        None, description="SQLite file of the audit log (default: <data_dir>/audit.db).")
    session_idle_secs: float = Field(1800, gt=0, description="Dashboard sessions expire after "
                                                            "this long without a request.")
    session_max_secs: float = Field(43200, gt=0, description="...and this long after login.")
    stats_interval_secs: float = Field(
        5, gt=0, description="How often statistics and queue depths are read from the store.")
    metrics_public: bool = Field(False, description="Serve /metrics without credentials.")
    secure_cookies: bool | None = Field(
        None, description="Mark the session cookie Secure (sent over HTTPS only). Default: on "
        "when tls is set; set true behind a TLS-terminating proxy.")
    public_url: str | None = Field(
        None, description="The address clients reach the admin API at, e.g. "
        "https://radbridge.example.org (behind a proxy, or when listening on 0.0.0.0): the "
        "base of every absolute URL we return (FHIR fullUrl, links). Default: the listener's "
        "own address. Never taken from request headers.")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else check_public_url(value)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict) and _CREDENTIAL_KEYS & set(data):
            raise ValueError("secrets do not belong in channels.toml: set "
                             "RADBRIDGE_ADMIN_PASSWORD (or _FILE) or RADBRIDGE_USERS_FILE")
        return data

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return check_hostport(value)

    @field_validator("secure_cookies")
    @classmethod
    def _secure_cookies(cls, value: bool | None, info: Any) -> bool | None:
        if value is False and info.data.get("tls") is not None:
            raise ValueError("false with tls set: browsers would also send the session "
                             "cookie over plain HTTP to this host")
        return value


class Config(Strict):
    store: StoreConfig = StoreConfig()
    engine: EngineSection = EngineSection()
    channel: list[ChannelConfig] = Field(default_factory=list)
    route: list[RouteConfig] = Field(default_factory=list)
    model: list[ModelConfig] = Field(default_factory=list)
    escalation: list[EscalationRule] = Field(
        default_factory=list, description="Worklist escalation rules (default: critical "
        "findings → STAT, high → URGENT).")
    admin: AdminConfig | None = Field(None, description="Absent: no admin API.")
    lookup: list[LookupConfig] = Field(
        default_factory=list, description="Lookup tables that map steps translate through "
        "(a CSV file, or inline rows).")
    # Set by lint_text: the directory relative lookup files and scripts are found in, the
    # tables as loaded (files read once per load: a reload reads them again), and whether
    # files were read at all (lint of documentation reads none).
    _base_dir: Path = PrivateAttr(default_factory=Path)
    _tables: dict[str, LookupTable] = PrivateAttr(default_factory=dict)
    _files_read: bool = PrivateAttr(default=True)

    @property
    def base_dir(self) -> Path:
        """The directory of the file this configuration was read from."""
        return self._base_dir

    @property
    def tables(self) -> dict[str, LookupTable]:
        """The ``[[lookup]]`` tables as loaded with this configuration, by name."""
        return self._tables

    @property
    def files_read(self) -> bool:
        return self._files_read

    def loaded_from(self, base_dir: Path, tables: dict[str, LookupTable]) -> None:
        """Give a copy rebuilt from plain data (a worker's snapshot) what the load gave the
        original: its directory and its tables as read (a table it lacks is read when a
        processor is built from it)."""
        self._base_dir, self._tables, self._files_read = base_dir, dict(tables), True

    def channel_named(self, name: str) -> Any:
        return next(c for c in self.channel if c.name == name)


def _loc_key(loc: tuple[str | int, ...], found: tuple[str | int, ...]) -> str:
    """Human key path, e.g. ``channel[0].source.listen``.

    Union tags that pydantic inserts (``mllp``) are dropped; a missing key
    (``loc`` longer than what the document has) is named after the found part.
    """
    parts = list(found)
    rest = [p for p in loc if isinstance(p, str)]
    if rest and rest[-1] not in registry.type_names() and (not parts or parts[-1] != rest[-1]):
        parts.append(rest[-1])
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _key_of(loc: tuple[str | int, ...]) -> str:
    """``("channel", 0, "filter", 1)`` as ``channel[0].filter[1]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p)
                   for i, p in enumerate(loc))


def _validation_problems(file: str, exc: ValidationError, index: dict[Any, int],
                         doc: dict[str, Any], reported: set[str]) -> list[ConfigProblem]:
    """Pydantic's errors as problems; an unknown key already *reported* (a secret given
    in clear) is not reported twice."""
    from engine.config.topology import unknown_types

    channels = doc.get("channel", [])
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if (len(loc) > 2 and loc[0] == "channel" and isinstance(loc[1], int)
                and loc[1] < len(channels) and isinstance(channels[loc[1]], dict)
                and loc[2] in unknown_types(channels[loc[1]])):
            continue  # already reported once as an unknown type
        line, found = line_for(index, loc)
        key, msg = _loc_key(loc, found), err["msg"]
        if err["type"] == "extra_forbidden":
            if key in reported:
                continue
            msg = "unknown key"
        problems.append(ConfigProblem(file, line, key, msg))
    return problems


def lint_text(text: str, file: str = "channels.toml", resolve_secrets: bool = True, *,
              check_files: bool = True) -> tuple[Config | None, list[ConfigProblem]]:
    """Parse and check *text*; return the config (if valid) and every problem found.

    Secrets given in clear are refused in every section; with *resolve_secrets* the
    environment variables and files that hold them must also be there (loading to run,
    ``radbridge lint`` on the engine's host). Without it only the shape is checked.
    Files the config names (TLS certificates, keys, CA bundles) must exist and be readable,
    relative to the working directory; ``check_files=False`` skips that (documentation).
    Lookup files and script modules are found relative to the directory of *file*; they are
    read (and scripts imported) here, unless ``check_files=False``.
    """
    from engine.config.lookups import check_lookups
    from engine.config.rules import check_rules
    from engine.config.steps import check_steps
    from engine.config.topology import check_topology

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        return None, [ConfigProblem(file, int(m.group(1)) if m else 1, "(syntax)", str(exc))]
    index = index_lines(text)
    secrets = clear_secret_problems(doc, lambda path: line_for(index, path)[0], file)
    problems = check_topology(doc, index, file) + _check_admin(doc, index, file) + secrets
    base_dir = Path(file).parent
    tables, table_problems = check_lookups(doc, base_dir, check_files)
    step_problems = check_steps(doc, tables, base_dir, check_files)
    problems += [ConfigProblem(file, line_for(index, loc)[0], _key_of(loc), msg)
                 for loc, msg in check_rules(doc) + _check_processor_options(doc)
                 + table_problems + step_problems]
    config = None
    try:
        context = {CHECK_FILES: check_files, **(RESOLVE if resolve_secrets else {})}
        config = Config.model_validate(doc, context=context)
    except ValidationError as exc:
        problems.extend(_validation_problems(file, exc, index, doc, {p.key for p in secrets}))
    if config is not None:
        config._base_dir, config._tables, config._files_read = base_dir, tables, check_files
    return (config if not problems else None), sorted(problems, key=lambda p: (p.line, p.key))


def _check_processor_options(doc: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Keys only one processor reads (``map``, ``values``): refused on a channel whose
    processor does not read them, checked by the one that does."""
    known = {spec.name: spec for spec in registry.processors()}
    owners = {key: spec.name for spec in known.values() for key in spec.options}
    channels = doc.get("channel", [])
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, ch in enumerate(channels if isinstance(channels, list) else []):
        if not isinstance(ch, dict):
            continue
        spec = known.get(str(ch.get("process", "forward")))
        for key in sorted(k for k in owners if k in ch and (spec is None or k not in spec.options)):
            problems.append((("channel", i, key), f'is read only by process = "{owners[key]}"'))
        mine = {k: ch[k] for k in spec.options if k in ch} if spec is not None else {}
        if mine and spec is not None and spec.check is not None:
            problems += [(("channel", i, *loc), msg) for loc, msg in spec.check(mine)]
    return problems


def _check_admin(doc: dict[str, Any], index: dict[Any, int], file: str) -> list[ConfigProblem]:
    """The admin listener must not share a port with a channel, nor "admin" be a channel
    name (``radbridge run`` prints ``listening admin HOST:PORT``)."""
    admin = doc.get("admin")
    if not isinstance(admin, dict) or admin.get("enabled") is False:
        return []
    problems = []
    try:
        port = parse_hostport(str(admin.get("listen", "127.0.0.1:8080")))[1]
    except ValueError:
        port = 0
    for i, ch in enumerate(c for c in doc.get("channel", []) if isinstance(c, dict)):
        if ch.get("name") == "admin":
            problems.append(ConfigProblem(file, line_for(index, ("channel", i, "name"))[0],
                                          f"channel[{i}].name",
                                          '"admin" is reserved for the admin listener'))
        src = ch.get("source")
        listen = src.get("listen") if isinstance(src, dict) else None
        if port and isinstance(listen, str) and listen.rpartition(":")[2] == str(port):
            problems.append(ConfigProblem(file, line_for(index, ("admin", "listen"))[0],
                                          "admin.listen",
                                          f"port {port} is already used by channel[{i}]"))
    return problems


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Load and lint *path*; raise ``ConfigErrors`` listing every problem. Without
    *check_files*, what exists only on the engine's host (the files a config names, the
    environment variables and files holding its secrets) is not looked for."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigProblem(str(p), 0, "(file)", exc.strerror or str(exc))]) from exc
    config, problems = lint_text(text, str(p), resolve_secrets=check_files,
                                 check_files=check_files)
    if problems or config is None:
        raise ConfigErrors(problems)
    return config


__all__ = ["AdminConfig", "Config", "ChannelConfig", "load_config", "lint_text",
           "parse_hostport"]
