"""Transformers: the ordered ``transform`` steps of a channel and of a destination.

A channel's ``transform`` runs after its ``filter`` and before its processor (the processor,
its routes and its destinations see the transformed message); a destination channel's
``filter`` and ``transform`` run for each delivery to it, on the payload it would get, before
that payload is queued. Each step is a table with exactly one kind key (the kinds registered
for the messages' field language with ``engine.registry.register_step``: ``set``, ``copy``,
``map``, ``delete``, ``add_segment``, ``move``, ``format_date``, ``replace``, ``upper``,
``lower``, ``script`` for HL7 v2), and may carry ``name`` (how errors and the dry run call it)
and ``when`` (a rule as in ``filter``, or a CEL string: the step runs only when it passes).

Steps compile once, when the configuration is loaded: every path, regex, expression, lookup
and script is checked then, each problem reported with its key path for
``file:line: key: message``. On one message a step may raise::

    StepError      it cannot do its work (a value that is no date, a lookup whose on_missing is
                   "error"): the message ends ERROR naming the step and the reason
    StepFiltered   it filters the message (a lookup whose on_missing is "filter"): FILTERED
    (any other)    a script's own exception: ERROR with its type and text (never logged)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import registry
from engine.config.lookups import LookupTable, MissingKey
from engine.config.rules import Loc, Test, compile_when

_COMMON = ("name", "when")


class StepError(Exception):
    """A step that cannot do its work on one message; ``reason`` quotes no field value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StepFiltered(Exception):
    """A step that filters one message; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def lookup_or_raise(table: LookupTable, key: tuple[str, ...], **how: Any) -> str | None:
    """``table.find`` with its missing keys raised as StepError or StepFiltered."""
    try:
        return table.find(key, **how)
    except MissingKey as exc:
        if exc.how == "filter":
            raise StepFiltered(str(exc)) from None
        raise StepError(str(exc)) from None


@dataclass(frozen=True)
class Step:
    """One compiled step: *name* as the analyst reads it, *apply* changes a parsed message."""

    name: str
    kind: str
    apply: Callable[[Any], Any]
    when: Test | None = None

    def run(self, message: Any) -> Any:
        """Apply the step unless its ``when`` keeps it from running; the message after it
        (a script may return another one)."""
        if self.when is not None and not self.when(message):
            return message
        replaced = self.apply(message)
        return message if replaced is None else replaced


@dataclass
class StepContext:
    """What a step compiler gets beside its table: typed keys, lookups, CEL, problems."""

    raw: dict[str, Any]
    loc: Loc
    fields: Any
    lookups: Mapping[str, LookupTable]
    base_dir: Path  # where relative files and script modules are looked for
    load: bool = True  # False: scripts are not imported (lint of documentation)
    problems: list[tuple[Loc, str]] = field(default_factory=list)

    def problem(self, key: str | None, message: str) -> None:
        """Report *message* at this step's *key* (None: the step itself)."""
        self.problems.append((self.loc + ((key,) if key else ()), message))

    def string(self, key: str, default: str | None = None) -> str | None:
        """The string at *key*; a missing key gives *default*, reported when that is None."""
        value = self.raw.get(key, default)
        if value is None:
            self.problem(None, f"needs {key}")
        elif not isinstance(value, str):
            self.problem(key, "must be a string")
            return None
        return value

    def strings(self, key: str) -> list[str] | None:
        """A string or a list of strings at *key* (None: absent or reported)."""
        value = self.raw.get(key)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
            self.problem(key, "must be a string or a non-empty list of strings")
            return None
        return items

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.raw.get(key, default)
        if value is not None and value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}")
            return None
        return value  # type: ignore[no-any-return]

    def lookup(self, key: str = "lookup") -> LookupTable | None:
        """The table named at *key*; an unknown name is reported."""
        name = self.string(key)
        if name is None:
            return None
        table = self.lookups.get(name)
        if table is None:
            known = ", ".join(sorted(self.lookups)) or "none"
            self.problem(key, f"unknown lookup {name!r} (known: {known})")
        return table

    def value(self, key: str) -> Callable[[Any], str] | None:
        """The CEL expression at *key*, compiled to a value (text) of a message."""
        from engine.config.rules import compile_value

        value, problems = compile_value(self.raw[key], self.loc + (key,), self.fields)
        self.problems += problems
        return None if problems else value


def _label(raw: dict[str, Any], kind: str, where: str) -> str:
    name = raw.get("name")
    if isinstance(name, str) and name:
        return name
    target = raw.get(kind)
    return f"{where} {kind} {target}" if isinstance(target, str) else f"{where} {kind}"


def compile_step(raw: Any, loc: Loc, where: str, sink: str, fields: Any,
                 lookups: Mapping[str, LookupTable], base_dir: Path, load: bool = True
                 ) -> tuple[Step | None, list[tuple[Loc, str]]]:
    """One step table as a :class:`Step` (None when it has no known kind), and its problems."""
    specs = registry.steps(sink)  # type: ignore[arg-type]
    if not isinstance(raw, dict):
        return None, [(loc, "a step is a table: { set = \"MSH-5\", value = \"EHR\" }")]
    kinds = [k for k in raw if k in specs]
    if len(kinds) != 1:
        others = [k for k in raw if k not in _COMMON]
        found = ", ".join(kinds) if kinds else (f"unknown step type {others[0]!r}" if others
                                                else "none")
        return None, [(loc + ((others[0],) if others and not kinds else ()),
                       f"a step has exactly one type of {', '.join(sorted(specs))} "
                       f"(found: {found})")]
    kind = kinds[0]
    spec = specs[kind]
    ctx = StepContext(raw, loc, fields, lookups, base_dir, load)
    for key in raw:
        if key not in (kind, *_COMMON, *spec.keys):
            ctx.problem(key, f"unknown key (a {kind} step knows: "
                             f"{', '.join((kind, *_COMMON, *spec.keys))})")
    if "name" in raw and not isinstance(raw["name"], str):
        ctx.problem("name", "must be a string")
    when = None
    if "when" in raw:
        when, problems = compile_when(raw["when"], loc + ("when",), fields)
        ctx.problems += problems
    apply = spec.compile(raw, ctx)
    return Step(_label(raw, kind, where), kind, apply, when), ctx.problems


def compile_steps(raw: Any, loc: Loc, sink: str, fields: Any,
                  lookups: Mapping[str, LookupTable], base_dir: Path, load: bool = True
                  ) -> tuple[list[Step], list[tuple[Loc, str]]]:
    """A ``transform`` list as compiled steps in order, and every problem of every step."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [(loc, "must be a list of steps: transform = [ { set = ... }, ... ]")]
    steps: list[Step] = []
    problems: list[tuple[Loc, str]] = []
    for i, item in enumerate(raw):
        step, found = compile_step(item, loc + (i,), f"{loc[-1]}[{i}]", sink, fields, lookups,
                                   base_dir, load)
        problems += found
        if step is not None:
            steps.append(step)
    return steps, problems


def channel_sink(ch: dict[str, Any]) -> str | None:
    """What a channel's messages are (``hl7``, ``json``...): its source's sink, else its
    destination's (None: neither has a known type)."""
    for kind in ("source", "destination"):
        part = ch.get(kind)
        if isinstance(part, dict):
            try:
                return registry.get(kind, str(part.get("type"))).sink  # type: ignore[arg-type]
            except KeyError:
                return None
    return None


def check_steps(doc: dict[str, Any], lookups: Mapping[str, LookupTable], base_dir: Path,
                load: bool = True) -> list[tuple[Loc, str]]:
    """Every problem of every channel's ``transform``, and a ``filter`` or ``transform`` on a
    channel whose messages no step reads (a FHIR or DICOM destination)."""
    problems: list[tuple[Loc, str]] = []
    channels = doc.get("channel", [])
    for i, ch in enumerate(channels if isinstance(channels, list) else []):
        if not isinstance(ch, dict):
            continue
        sink = channel_sink(ch)
        if sink is None:
            continue
        readable = bool(registry.steps(sink))  # type: ignore[arg-type]
        for key in ("filter", "transform"):
            if key in ch and not readable:
                problems.append((("channel", i, key), f"this channel's messages are {sink}: "
                                 f"{key} steps read HL7 v2 (hl7) only"))
        if "transform" in ch and readable:
            problems += compile_steps(ch["transform"], ("channel", i, "transform"), sink,
                                      registry.fields(sink), lookups,  # type: ignore[arg-type]
                                      base_dir, load)[1]
    return problems
