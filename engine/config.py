"""channels.toml: typed models, loading, and lint that reports every problem at once.

Problems are reported as ``file:line: key: message``. Field-level problems
come from pydantic; topology problems (duplicate names, two listeners on one
port, references to unknown channels or models) from ``engine.topology``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError

from engine import registry
from engine.configbase import Strict, parse_hostport
from engine.errors import ConfigErrors, ConfigProblem
from engine.tomlindex import index_lines, line_for


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


class DuplicatesConfig(Strict):
    window_secs: float = Field(0, ge=0, description="Look back this long for a repeated MSH-10; "
                                                    "0 turns the check off.")
    action: Literal["flag", "reject"] = Field(
        "flag", description="flag: accept and mark duplicate; reject: answer AR (205).")


MESSAGE_TYPE = re.compile(r"^[A-Z][A-Z0-9]{2}(\^[A-Z0-9]{3})?$")


class RouteConfig(Strict):
    when: dict[str, str | list[str]] = Field(default_factory=dict)
    models: list[str] = Field(min_length=1)


class ModelConfig(Strict):
    name: str
    version: str
    path: str | None = None
    batch_max: int = Field(8, ge=1)
    mode: Literal["second_reader", "shadow"] = "second_reader"


def _union(kind: registry.Kind) -> Any:
    models = tuple(spec.config for spec in registry.connectors(kind))
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


def _channel_model() -> type[BaseModel]:
    source_t = _union("source")
    dest_t = _union("destination")

    class ChannelConfig(Strict):
        name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$",
                          description="Unique, lower-case; used in URLs and the CLI.")
        description: str = ""
        enabled: bool = True
        source: source_t | None = None  # type: ignore[valid-type]
        destination: dest_t | None = None  # type: ignore[valid-type]
        accept: list[str] | None = Field(
            None, description='Message types answered AA, e.g. ["ADT^A01", "ORM^O01"]; '
                              "others get AR. Absent: accept all.")
        ack: Literal["after_store"] = "after_store"
        forward_to: list[str] = Field(default_factory=list,
                                      description="Destination channels fed by this one.")
        key: Literal["patient_id", "none"] = Field(
            "patient_id", description="Order is kept per key; different keys run in parallel.")
        duplicates: DuplicatesConfig = DuplicatesConfig()
        study_quiet_secs: float = Field(
            30, gt=0, description="DICOM sources: a study is complete after this long without "
                                  "a new instance (or when an order says CM, or on demand).")
        process: Literal["forward", "orders"] = Field(
            "forward", description="forward: pass messages on unchanged; orders: also map "
                                   "ADT/ORM/OMI into patients and orders and correlate them "
                                   "with studies.")

    return ChannelConfig


ChannelConfig = _channel_model()


class Config(Strict):
    store: StoreConfig = StoreConfig()
    engine: EngineSection = EngineSection()
    channel: list[ChannelConfig] = Field(default_factory=list)  # type: ignore[valid-type]
    route: list[RouteConfig] = Field(default_factory=list)
    model: list[ModelConfig] = Field(default_factory=list)

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


def _validation_problems(file: str, exc: ValidationError, index: dict[Any, int],
                         doc: dict[str, Any]) -> list[ConfigProblem]:
    from engine.topology import unknown_types

    channels = doc.get("channel", [])
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if (len(loc) > 2 and loc[0] == "channel" and isinstance(loc[1], int)
                and loc[1] < len(channels) and isinstance(channels[loc[1]], dict)
                and loc[2] in unknown_types(channels[loc[1]])):
            continue  # already reported once as an unknown type
        line, found = line_for(index, loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(ConfigProblem(file, line, _loc_key(loc, found), msg))
    return problems


def lint_text(text: str, file: str = "channels.toml") -> tuple[Config | None, list[ConfigProblem]]:
    """Parse and check *text*; return the config (if valid) and every problem found."""
    from engine.topology import check_topology

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        return None, [ConfigProblem(file, int(m.group(1)) if m else 1, "(syntax)", str(exc))]
    index = index_lines(text)
    problems = check_topology(doc, index, file)
    config = None
    try:
        config = Config.model_validate(doc)
    except ValidationError as exc:
        problems.extend(_validation_problems(file, exc, index, doc))
    return (config if not problems else None), sorted(problems, key=lambda p: (p.line, p.key))


def load_config(path: str | Path) -> Config:
    """Load and lint *path*; raise ``ConfigErrors`` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigProblem(str(p), 0, "(file)", exc.strerror or str(exc))]) from exc
    config, problems = lint_text(text, str(p))
    if problems or config is None:
        raise ConfigErrors(problems)
    return config


__all__ = ["Config", "ChannelConfig", "load_config", "lint_text", "parse_hostport"]
