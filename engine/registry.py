"""Connectors, processors and result payload builders register themselves by name.

A connector registers by ``type`` with a typed config model; the model doubles as
documentation: ``radbridge list`` prints every registered type with its fields and
descriptions. A processor registers by the name a channel's ``process`` gives; the
allowed names (and their lint error) come from here. A payload builder registers by the
payload a destination sends (``sink``): the results processor asks it for each
destination's payload. Each registers from the package that owns its protocol; the
plugin loader (``engine.plugins``) imports the built-in packages so that they do.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

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
    config: builtins.type[BaseModel]  # ``type`` is the field above, here
    factory: Callable[..., Any]
    summary: str
    sink: Payload = "hl7"


_REGISTRY: dict[tuple[Kind, str], ConnectorSpec] = {}


def register(kind: Kind, type_name: str, config: type[BaseModel], summary: str,
             sink: Payload = "hl7"
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: ``@register("source", "mllp", MLLPSourceConfig, "...")``.

    A source factory is called as ``factory(channel_name, config, sink)`` where the
    sink is an ``engine.flow.ingest.Ingest`` (``sink="hl7"``) or an
    ``engine.flow.instances.InstanceIngest`` (``sink="dicom"``); a destination factory
    as ``factory(channel_name, config)``; a destination's ``sink`` is the payload it sends.
    """

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[(kind, type_name)] = ConnectorSpec(kind, type_name, config, factory, summary,
                                                     sink)
        return factory

    return wrap


def load_builtins() -> None:
    """Have the plugin loader import the built-in packages so that they register."""
    from engine import plugins

    plugins.load()


def connectors(kind: Kind) -> list[ConnectorSpec]:
    load_builtins()
    return sorted((s for (k, _), s in _REGISTRY.items() if k == kind), key=lambda s: s.type)


def get(kind: Kind, type_name: str) -> ConnectorSpec:
    load_builtins()
    return _REGISTRY[(kind, type_name)]


def type_names(kind: Kind | None = None) -> set[str]:
    load_builtins()
    return {t for (k, t) in _REGISTRY if kind is None or k == kind}


# -- processors: what a channel's pipeline does with each stored message ---------------------

# ``factory(channel, config)`` → an ``engine.flow.pipeline.Processor`` for that channel.
ProcessorFactory = Callable[[Any, Any], Any]
# ``check(options)`` → (key path below the channel, message) for each problem in the channel
# keys the processor reads beyond the common ones (``map``, ``values`` for ``orders``).
OptionsCheck = Callable[[dict[str, Any]], list[tuple[tuple[str | int, ...], str]]]


@dataclass(frozen=True, slots=True)
class ProcessorSpec:
    name: str
    factory: ProcessorFactory
    summary: str
    rank: int
    options: tuple[str, ...] = ()
    check: OptionsCheck | None = None


_PROCESSORS: dict[str, ProcessorSpec] = {}


def register_processor(name: str, summary: str, rank: int = 100, *,
                       options: tuple[str, ...] = (), check: OptionsCheck | None = None
                       ) -> Callable[[ProcessorFactory], ProcessorFactory]:
    """Decorator: ``@register_processor("orders", "also map ...")`` on ``factory(channel,
    config)``. *rank* orders the names where they are listed (lint messages, the docs).
    *options* names the channel keys only this processor reads; lint passes them, as they
    are in the document, to *check*."""

    def wrap(factory: ProcessorFactory) -> ProcessorFactory:
        _PROCESSORS[name] = ProcessorSpec(name, factory, summary, rank, options, check)
        return factory

    return wrap


def processors() -> list[ProcessorSpec]:
    """Every registered processor, in rank order (then by name)."""
    load_builtins()
    return sorted(_PROCESSORS.values(), key=lambda s: (s.rank, s.name))


def processor(name: str) -> ProcessorSpec:
    load_builtins()
    return _PROCESSORS[name]


# -- result payload builders: one AI report → what a destination sends -----------------------

# ``build(job)`` → the (layer name, payload) pairs for one destination, where *job* is an
# ``engine.results.model.ResultBuild``; each pair is kept as a layer and delivered.
PayloadBuilder = Callable[[Any], list[tuple[str, bytes]]]


@dataclass(frozen=True, slots=True)
class PayloadSpec:
    name: str
    build: PayloadBuilder
    summary: str
    # Run once for every report before any destination's payload (e.g. the FHIR Bundle, the
    # case's durable record); it fills ``job.layers`` and ``job.resources``.
    prepare: Callable[[Any], None] | None = None


_PAYLOADS: dict[str, PayloadSpec] = {}


def register_payload(name: str, summary: str, prepare: Callable[[Any], None] | None = None
                     ) -> Callable[[PayloadBuilder], PayloadBuilder]:
    """Decorator: ``@register_payload("hl7", "ORU^R01")`` on ``build(job)``."""

    def wrap(build: PayloadBuilder) -> PayloadBuilder:
        _PAYLOADS[name] = PayloadSpec(name, build, summary, prepare)
        return build

    return wrap


def payloads() -> list[PayloadSpec]:
    """Every registered payload builder, in registration order."""
    load_builtins()
    return list(_PAYLOADS.values())


def payload(name: str) -> PayloadSpec | None:
    load_builtins()
    return _PAYLOADS.get(name)



T = TypeVar("T")


def _keep(table: dict[str, T], key: str) -> Callable[[T], T]:
    """The decorator every name-keyed table below registers with: keep the item, return it."""

    def wrap(item: T) -> T:
        table[key] = item
        return item

    return wrap


# -- services: long-running parts a package adds to the engine (inference) -------------------

# ``start(engine)`` → the running service (it has ``stop()``), or None when not configured.
ServiceStarter = Callable[[Any], Awaitable[Any]]

_SERVICES: dict[str, ServiceStarter] = {}


def register_service(name: str) -> Callable[[ServiceStarter], ServiceStarter]:
    """Decorator: ``@register_service("inference")`` on ``async start(engine)``."""

    return _keep(_SERVICES, name)


async def start_service(name: str, engine: Any) -> Any:
    """Start the service registered as *name* for *engine*; None if none is registered."""
    load_builtins()
    start = _SERVICES.get(name)
    return None if start is None else await start(engine)


# -- answerers: a protocol's answer policy for the raw messages of a source ------------------

# ``factory(app, facility)`` → an ``engine.connectors.Answerer``.
AnswererFactory = Callable[..., Any]  # (app, facility, **channel options)

_ANSWERERS: dict[str, AnswererFactory] = {}


def register_answerer(sink: Payload) -> Callable[[AnswererFactory], AnswererFactory]:
    """Decorator: ``@register_answerer("hl7")`` on the answerer of the sources whose
    ``sink`` is that payload (``engine.flow.ingest.Ingest`` calls it)."""

    return _keep(_ANSWERERS, sink)


def answerer(sink: Payload, app: str, facility: str, **options: Any) -> Any:
    """The answerer registered for *sink*, answering as *app*/*facility*, with the channel's
    answer *options* (``empty_control_id``)."""
    load_builtins()
    return _ANSWERERS[sink](app, facility, **options)


# -- instance readers: identify a stored instance from its bytes -----------------------------

# ``read(data, own_manufacturer)`` → ``engine.store.clinical.InstanceMeta``; raises
# ``engine.flow.instances.InvalidInstance`` (or ``InvalidUID``) for what cannot be taken.
InstanceReader = Callable[[bytes, str], Any]

_READERS: dict[str, InstanceReader] = {}


def register_reader(sink: Payload) -> Callable[[InstanceReader], InstanceReader]:
    """Decorator: ``@register_reader("dicom")`` on the reader ``InstanceIngest`` uses for
    the instances of the sources whose ``sink`` is that payload."""

    return _keep(_READERS, sink)


def reader(sink: Payload) -> InstanceReader:
    """The instance reader registered for *sink*."""
    load_builtins()
    return _READERS[sink]


# -- views: how the admin shows content it does not understand -------------------------------

# ``message_layer``: ``render(name, data, masked)`` → one content layer of the message viewer
# (``{"name", "size", "masked", "format", "segments", "text"}``), masked for viewers.
_VIEWS: dict[str, Callable[..., Any]] = {}


def register_view(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register_view("message_layer")`` on the admin's renderer for *name*."""

    return _keep(_VIEWS, name)


def view(name: str) -> Callable[..., Any]:
    """The view registered as *name*."""
    load_builtins()
    return _VIEWS[name]


# -- field languages: how rules read fields of a stored message -------------------------------

# ``hl7``: ``compile(path)`` → a reader of one field (raises ``ValueError`` on a bad path) and
# ``parse(raw)`` → the message those readers read; used by channel filters and routes.
# ``measure(raw)`` → what processing *raw* will cost, as counts (``{"segments": n, "fields":
# m}``) found without parsing; ``engine.flow.bounds`` refuses a message over the limits.
_FIELDS: dict[str, Any] = {}


def register_fields(sink: Payload) -> Callable[[Any], Any]:
    """Decorator: ``@register_fields("hl7")`` on the field language of what *sink* carries."""

    return _keep(_FIELDS, sink)


def fields(sink: Payload) -> Any:
    """The field language registered for *sink*."""
    load_builtins()
    return _FIELDS[sink]


# -- analyst steps: the transformers a field language offers ----------------------------------

# ``compile(raw, ctx)`` → ``apply(message)``: *raw* is the step's table from ``channels.toml``
# (``{ set = "MSH-5", value = "EHR" }``), *ctx* an ``engine.config.steps.StepContext`` (paths,
# lookups, CEL values, problems reported with their key); ``apply`` changes the parsed message
# in place and raises ``engine.config.steps.StepError`` or ``StepFiltered`` (a raise of another
# type is a script's: the message ends ERROR naming its type).
StepCompiler = Callable[[dict[str, Any], Any], Callable[[Any], Any]]


@dataclass(frozen=True, slots=True)
class StepSpec:
    kind: str
    compile: StepCompiler
    summary: str
    keys: tuple[str, ...]  # the keys a step of this kind may carry beside its kind, name, when


_STEPS: dict[tuple[str, str], StepSpec] = {}


def register_step(sink: Payload, kind: str, summary: str, keys: tuple[str, ...] = ()
                  ) -> Callable[[StepCompiler], StepCompiler]:
    """Decorator: ``@register_step("hl7", "set", "write a field", keys=("value", ...))`` on
    the step's compiler, for the messages of the field language *sink*."""

    def wrap(compile: StepCompiler) -> StepCompiler:
        _STEPS[(sink, kind)] = StepSpec(kind, compile, summary, keys)
        return compile

    return wrap


def steps(sink: Payload) -> dict[str, StepSpec]:
    """The step kinds registered for *sink*, by kind (empty when its messages have none)."""
    load_builtins()
    return {kind: spec for (s, kind), spec in _STEPS.items() if s == sink}
