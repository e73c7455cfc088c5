"""Connectors register themselves by ``type`` name with a typed config model.

The config model doubles as documentation: ``radbridge list`` prints every
registered type with its fields and descriptions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

Kind = Literal["source", "destination"]


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    kind: Kind
    type: str
    config: type[BaseModel]
    factory: Callable[..., Any]
    summary: str


_REGISTRY: dict[tuple[Kind, str], ConnectorSpec] = {}


def register(kind: Kind, type_name: str, config: type[BaseModel], summary: str
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: ``@register("source", "mllp", MLLPSourceConfig, "...")``."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[(kind, type_name)] = ConnectorSpec(kind, type_name, config, factory, summary)
        return factory

    return wrap


def load_builtins() -> None:
    """Import the built-in connector packages so that they register."""
    import channels.file  # noqa: F401
    import channels.mllp  # noqa: F401


def connectors(kind: Kind) -> list[ConnectorSpec]:
    load_builtins()
    return sorted((s for (k, _), s in _REGISTRY.items() if k == kind), key=lambda s: s.type)


def get(kind: Kind, type_name: str) -> ConnectorSpec:
    load_builtins()
    return _REGISTRY[(kind, type_name)]


def type_names(kind: Kind | None = None) -> set[str]:
    load_builtins()
    return {t for (k, t) in _REGISTRY if kind is None or k == kind}
