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
# What a source hands over (HL7 frames, DICOM instances) or what a destination sends: the
# results channel builds each destination's payload by this (hl7: ORU^R01 or an order update,
# dicom: the SR, fhir: a transaction Bundle, json: an alert).
Payload = Literal["hl7", "dicom", "fhir", "json"]


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    kind: Kind
    type: str
    config: type[BaseModel]
    factory: Callable[..., Any]
    summary: str
    sink: Payload = "hl7"


_REGISTRY: dict[tuple[Kind, str], ConnectorSpec] = {}


def register(kind: Kind, type_name: str, config: type[BaseModel], summary: str,
             sink: Payload = "hl7"
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: ``@register("source", "mllp", MLLPSourceConfig, "...")``.

    A source factory is called as ``factory(channel_name, config, sink)`` where the
    sink is an ``engine.ingest.Ingest`` (``sink="hl7"``) or an
    ``engine.instances.InstanceIngest`` (``sink="dicom"``); a destination factory
    as ``factory(channel_name, config)``; a destination's ``sink`` is the payload it sends.
    """

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[(kind, type_name)] = ConnectorSpec(kind, type_name, config, factory, summary,
                                                     sink)
        return factory

    return wrap


def load_builtins() -> None:
    """Import the built-in connector packages so that they register."""
    import channels.file  # noqa: F401
    import channels.mllp  # noqa: F401
    import engine.results  # noqa: F401  (the ai_results source)

    for optional in ("channels.dicom", "channels.dicomweb", "channels.fhir_rest",
                     "channels.webhook"):
        try:
            __import__(optional)
        except ModuleNotFoundError as exc:  # package not written yet in this checkout
            if exc.name != optional:
                raise


def connectors(kind: Kind) -> list[ConnectorSpec]:
    load_builtins()
    return sorted((s for (k, _), s in _REGISTRY.items() if k == kind), key=lambda s: s.type)


def get(kind: Kind, type_name: str) -> ConnectorSpec:
    load_builtins()
    return _REGISTRY[(kind, type_name)]


def type_names(kind: Kind | None = None) -> set[str]:
    load_builtins()
    return {t for (k, t) in _REGISTRY if kind is None or k == kind}
