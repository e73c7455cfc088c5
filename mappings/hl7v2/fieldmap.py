"""Where each domain value lives in an HL7 v2 message, per channel.

Sites differ: one RIS sends the accession in OBR-18, another in OBR-20 or
IPC-1. A :class:`FieldMap` lists, for every mapped value, the field paths to
try in order; the first one that holds a value wins. A path reads
``SEG-field[.component[.subcomponent]]`` (``OBR-18``, ``ORC-7.6``,
``PID-3.4.1``); without a component it means the first component, and it always
reads the first repetition, except for the whole-field (composite) values —
identifiers, name, procedure code — which read every repetition themselves.

This module also holds the small, uniform view over parsed segments that the mappings
read through (:class:`Scope`; :class:`ReaderSegmentView` over the lazy reader,
:class:`SegmentView` over python-hl7's segments).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from mappings.hl7v2.reader import HEADER_SEGMENTS, Message, PathError, Segment, compile_path
from mappings.hl7v2.text import decode

_N = r"[1-9][0-9]{0,2}"
PATH_PATTERN = (
    rf"^[A-Za-z][A-Za-z0-9]{{2}}(\[{_N}\])?-{_N}(\[({_N}|\.{_N}(\.{_N})?=[^\]]*)\])?"
    rf"((\.{_N}){{0,2}}|!)$"
)
_EXAMPLES = "'OBR-18', 'OBR-18!', 'ORC-7.6', 'PID-3[.5=MR].1' or 'OBX[3]-5'"

#: Repetitions -> components -> subcomponents, every leaf unescaped and stripped.
Repetitions = list[list[list[str]]]


@dataclass(frozen=True, slots=True)
class FieldPath:
    """One HL7 field location: segment id, field, optional component and subcomponent; which
    occurrence of the segment (``OBX[3]``) and which repetition (``PID-3[2]``, or the one whose
    component matches: ``PID-3[.5=MR]``); ``whole`` (``OBR-18!``) reads a repetition whole."""

    segment: str
    field: int
    component: int | None = None
    subcomponent: int | None = None
    whole: bool = False  # ``OBR-18!``: the first repetition whole, separators kept as data
    occurrence: int | None = None  # ``OBX[3]-5``: the third OBX (of the nearest scope)
    repetition: int | None = None  # ``PID-3[2]``
    match: tuple[int, int | None, str] | None = None  # ``PID-3[.5=MR]``: (component, sub, value)

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        """Parse a field path of the reader's grammar (:mod:`mappings.hl7v2.readpath`) that
        names a field; raise ValueError.

        ``!`` reads the field whole: an ST field whose sender put a component separator in it
        (``OBR-18`` = ``MR^20061213-0007``) reads as ``MR^20061213-0007``, not ``MR``.

        Segment ids are case-insensitive (``obr-18`` reads as ``OBR-18``); a ``[.5=MR]`` value
        is compared as written. Numbers are 1-based, as in the HL7 standard.
        """
        if not isinstance(text, str):
            raise ValueError(f"an HL7 field path must be a string, not {type(text).__name__}")
        try:
            path = compile_path(text.strip())
        except PathError as exc:
            raise ValueError(f"{text!r} is not an HL7 field path like {_EXAMPLES}: "
                             f"{exc.reason}") from None
        if path.field is None:
            raise ValueError(f"{text!r} is not an HL7 field path like {_EXAMPLES}: it names a "
                             "segment, not a field")
        return cls(path.segment, path.field, path.component, path.subcomponent, path.whole,
                   path.occurrence, path.repetition, path.match)

    def __str__(self) -> str:
        occ = f"[{self.occurrence}]" if self.occurrence is not None else ""
        sel = f"[{self.repetition}]" if self.repetition is not None else ""
        if self.match is not None:
            comp, sub, value = self.match
            sel = f"[.{comp}{f'.{sub}' if sub else ''}={value}]"
        parts = "".join(f".{n}" for n in (self.component, self.subcomponent) if n is not None)
        return f"{self.segment}{occ}-{self.field}{sel}{parts}{'!' if self.whole else ''}"

    @property
    def selects(self) -> bool:
        """Whether the path picks a repetition other than by default (``[2]``, ``[.5=MR]``)."""
        return self.repetition is not None or self.match is not None

    def pick(self, reps: Repetitions) -> Repetitions:
        """The repetitions of one field this path selects (all of them without a selector)."""
        if self.repetition is not None:
            return reps[self.repetition - 1 : self.repetition]
        if self.match is not None:
            comp, sub, wanted = self.match
            return [r for r in reps if (component(r, comp, sub or 1) or "") == wanted]
        return reps


def _to_paths(value: Any) -> Any:
    """Accept one path or a list of paths, as strings or FieldPath objects."""
    items = [value] if isinstance(value, str | FieldPath) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected an HL7 field path or a list of them")
    return tuple(p if isinstance(p, FieldPath) else FieldPath.parse(p) for p in items)


def _whole_fields(paths: tuple[FieldPath, ...]) -> tuple[FieldPath, ...]:
    for path in paths:
        if path.component is not None or path.whole:
            hint = f" (select a repetition with {path.segment}-{path.field}[.5=MR])" \
                if path.component is not None else ""
            raise ValueError(f"{path} names a component or '!'; this value reads a whole "
                             f"field{hint}")
    return paths


_SCHEMA = WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": PATH_PATTERN}})
_SERIAL = PlainSerializer(lambda paths: [str(p) for p in paths], return_type=list[str])
Paths = Annotated[tuple[FieldPath, ...], BeforeValidator(_to_paths), _SERIAL, _SCHEMA]
FieldPaths = Annotated[
    tuple[FieldPath, ...],
    BeforeValidator(_to_paths),
    AfterValidator(_whole_fields),
    _SERIAL,
    _SCHEMA,
]


def _paths(*texts: str) -> tuple[FieldPath, ...]:
    return tuple(FieldPath.parse(t) for t in texts)


class FieldMap(BaseModel):
    """Which HL7 field carries each mapped value; each list is tried in order.

    The defaults follow HL7 v2.3–2.5.1 and IHE Radiology Scheduled Workflow.
    A channel overrides only what its site does differently, e.g.
    ``FieldMap(accession=["OBR-18", "IPC-1", "OBR-20"])``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # PID-2 (external id, retained for backward compatibility) holds the patient where a
    # sender leaves PID-3 empty; reading it is flagged (``orders.map_message`` notes).
    patient_identifiers: FieldPaths = Field(
        default=_paths("PID-3", "PID-2"), min_length=1, description="CX list"
    )
    patient_name: FieldPaths = Field(
        default=_paths("PID-5"), description="XPN; legal name preferred"
    )
    birth_date: Paths = Field(
        default=_paths("PID-7"), description="date of birth, kept as YYYYMMDD"
    )
    sex: Paths = Field(default=_paths("PID-8"), description="administrative sex")
    patient_class: Paths = Field(default=_paths("PV1-2"), description="E, I, O ...")
    location: Paths = Field(default=_paths("PV1-3"), description="point of care")
    merged_from: FieldPaths = Field(
        default=_paths("MRG-1"), min_length=1, description="merged CX list"
    )
    order_control: Paths = Field(
        default=_paths("ORC-1"), min_length=1, description="NW, SC, CA, DC ..."
    )
    order_status: Paths = Field(default=_paths("ORC-5"), description="SC, IP, CM, CA ...")
    placer_number: Paths = Field(
        default=_paths("ORC-2", "OBR-2"), description="placer order number"
    )
    filler_number: Paths = Field(
        default=_paths("ORC-3", "OBR-3"), description="filler order number"
    )
    # OBR-18/19 are ST (placer fields): read whole, a "^" in them is data.
    accession: Paths = Field(default=_paths("OBR-18!", "IPC-1"), description="accession number")
    requested_procedure_id: Paths = Field(default=_paths("OBR-19!", "IPC-2"))
    study_instance_uid: Paths = Field(default=_paths("ZDS-1", "IPC-3"))
    modality: Paths = Field(default=_paths("OBR-24", "IPC-5"))
    procedure_code: FieldPaths = Field(
        default=_paths("OBR-4"), description="CE/CWE code^text^system"
    )
    priority: Paths = Field(
        default=_paths("ORC-7.6", "OBR-27.6", "TQ1-9"), description="S, A, R ..."
    )
    ordered_at: Paths = Field(default=_paths("ORC-9", "OBR-6"), description="HL7 DTM timestamp")
    values: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="per key: value as read -> value stored"
    )

    @model_validator(mode="after")
    def _values_name_single_values(self) -> FieldMap:
        for key in self.values:
            if key not in VALUE_KEYS:
                raise ValueError(
                    f"values.{key}: not a key with a single value; one of "
                    f"{', '.join(sorted(VALUE_KEYS))}"
                )
        return self

    def mapped(self, key: str, value: str | None) -> str | None:
        """*value* as read for *key*, through the channel's value map (exact, then upper-case)."""
        table = self.values.get(key)
        if value is None or not table:
            return value
        return table.get(value, table.get(value.upper(), value))

    @classmethod
    def from_options(cls, paths: dict[str, Any] | None, values: dict[str, Any] | None) -> FieldMap:
        """The field map of a channel's ``map`` and ``values`` (keys by name or alias)."""
        fields = {ALIASES.get(k, k): v for k, v in (paths or {}).items()}
        return cls(**fields, values={ALIASES.get(k, k): v for k, v in (values or {}).items()})


#: Names a channel may use for a FieldMap key (``patient_id`` reads better in channels.toml).
ALIASES = {"patient_id": "patient_identifiers"}
PATH_KEYS = frozenset(k for k in FieldMap.model_fields if k != "values")
#: Keys that read one value (the others read whole composites: identifiers, name, code).
VALUE_KEYS = PATH_KEYS - {"patient_identifiers", "patient_name", "merged_from", "procedure_code"}


def check_options(options: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Lint a channel's ``map`` and ``values``: (key path, message) per problem."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    valid = ", ".join(sorted(PATH_KEYS | set(ALIASES)))
    for section, keys in (("map", PATH_KEYS), ("values", VALUE_KEYS)):
        table = options.get(section)
        if table is None:
            continue
        if not isinstance(table, dict):
            problems.append(((section,), "must be a table keyed by field-map key"))
            continue
        for key, value in table.items():
            name = ALIASES.get(key, key)
            if name not in keys:
                shown = valid if section == "map" else ", ".join(sorted(keys))
                problems.append(((section, key), f"unknown key; valid keys: {shown}"))
            else:
                problems += [((section, key), msg) for msg in _problems(section, name, value)]
    return problems


def _problems(section: str, name: str, value: Any) -> list[str]:
    if section == "values":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return ['must be a table of strings, e.g. { STAT = "S" }']
        return []
    try:
        FieldMap.model_validate({name: value})
    except ValidationError as exc:
        return [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
    return []


def _subs(node: Any) -> list[str]:
    return [node] if isinstance(node, str) else [str(s) for s in node]


def _comps(node: Any) -> list[list[str]]:
    return [[node]] if isinstance(node, str) else [_subs(c) for c in node]


_ESCAPE_NAMES = {"F": 1, "R": 2, "S": 3, "T": 4}
_DROPPED = {"H", "N", ".fi", ".nf"}  # highlighting and fill mode carry no text


class SegmentView:
    """One parsed segment read as plain strings: unescaped, stripped, ``""`` as empty."""

    def __init__(self, segment: Any, separators: str, esc: str, charset: str | None) -> None:
        self._segment = segment
        self._separators = separators  # "\r" + field, repetition, component, subcomponent
        self._esc = esc
        self._charset = charset
        self.name = str(segment[0]).strip().upper() if len(segment) else ""

    def repetitions(self, number: int) -> Repetitions:
        """All repetitions of field *number* (1-based, MSH-n counts MSH-1 too)."""
        if number >= len(self._segment):
            return []
        node = self._segment[number]
        reps = [[[node]]] if isinstance(node, str) else [_comps(r) for r in node]
        return [[[self._clean(s) for s in comp] for comp in rep] for rep in reps]

    def value(self, path: FieldPath) -> str | None:
        """The value at *path* in the first repetition, or None when absent or empty."""
        reps = self.repetitions(path.field)
        if path.whole:
            return self._whole(reps[0]) if reps else None
        return component(reps[0], path.component or 1, path.subcomponent or 1) if reps else None

    def _whole(self, rep: list[list[str]]) -> str | None:
        """One repetition as its text: components and subcomponents joined by their separators."""
        if not any(s for comp in rep for s in comp):
            return None
        return self._separators[3].join(self._separators[4].join(c) for c in rep)

    def _clean(self, text: str) -> str:
        text = self._unescape(text) if self._esc and self._esc in text else text
        text = text.strip()
        return "" if text == '""' else text

    def _unescape(self, text: str) -> str:
        esc = re.escape(self._esc)
        return re.sub(f"{esc}([^{esc}]*){esc}", self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _ESCAPE_NAMES:
            return self._separators[_ESCAPE_NAMES[name]]
        if name == "E":
            return self._esc
        if name in _DROPPED:
            return ""
        if name.startswith((".br", ".sp")):
            return "\n"
        if name.startswith("X") and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", name[1:]):
            return decode(bytes.fromhex(name[1:]), self._charset)
        return match.group(0)  # unknown sequence: keep it as sent


class ReaderSegmentView(SegmentView):
    """A :class:`SegmentView` over a segment of :mod:`mappings.hl7v2.reader`: split on demand.

    Reads the same values as the python-hl7 view (same unescaping, stripping and ``""``), but
    only the segments a mapping touches are ever split.
    """

    def __init__(self, segment: Segment, msg: Message, charset: str | None) -> None:
        self._segment = segment
        self._separators = "\r" + msg.fs + msg.rep + msg.comp + msg.sub
        self._esc = msg.esc
        self._charset = charset
        self._msg = msg
        self.name = segment.id.strip().upper()

    def repetitions(self, number: int) -> Repetitions:
        """All repetitions of field *number* (1-based, MSH-n counts MSH-1 too)."""
        msg = self._msg
        fields = self._segment.fields(msg.fs)
        if number >= len(fields):
            return []
        value = fields[number]
        if self.name in HEADER_SEGMENTS and number <= 2:
            return [[[self._clean(value)]]]
        return [
            [[self._clean(s) for s in _split(c, msg.sub)] for c in _split(r, msg.comp)]
            for r in _split(value, msg.rep)
        ]

    def value(self, path: FieldPath) -> str | None:
        """The value at *path* in the first repetition, or None; splits only down to it."""
        msg = self._msg
        fields = self._segment.fields(msg.fs)
        if path.field >= len(fields):
            return None
        text = fields[path.field]
        if path.whole:
            if self.name not in HEADER_SEGMENTS or path.field > 2:
                text = _nth(text, msg.rep, 1)
        elif not (self.name in HEADER_SEGMENTS and path.field <= 2):
            text = _nth(_nth(text, msg.rep, 1), msg.comp, path.component or 1)
            text = _nth(text, msg.sub, path.subcomponent or 1)
        elif (path.component or 1) != 1 or (path.subcomponent or 1) != 1:
            return None
        return self._clean(text) or None


def _split(text: str, sep: str) -> list[str]:
    return text.split(sep) if sep else [text]


def _nth(text: str, sep: str, n: int) -> str:
    """Part *n* (1-based) of *text* split on *sep*; "" when there are fewer parts."""
    if not sep:
        return text if n == 1 else ""
    parts = text.split(sep, n)
    return parts[n - 1] if len(parts) >= n else ""


def component(rep: list[list[str]], number: int, sub: int = 1) -> str | None:
    """Component *number* (1-based), subcomponent *sub*, of one repetition; None if empty."""
    if number > len(rep) or sub > len(rep[number - 1]):
        return None
    return rep[number - 1][sub - 1] or None


class Scope:
    """Segments searched by name: the nearest layer (an order group) first, then outer ones."""

    def __init__(self, *layers: Sequence[SegmentView]) -> None:
        self._layers = layers

    def find(self, name: str) -> SegmentView | None:
        """The first segment called *name* in the nearest layer that has one."""
        for layer in self._layers:
            for seg in layer:
                if seg.name == name:
                    return seg
        return None

    def at(self, path: FieldPath) -> SegmentView | None:
        """The segment *path* reads: its occurrence (``OBX[3]``) counted in the nearest layer
        that holds the segment at all, else the first."""
        if path.occurrence is None:
            return self.find(path.segment)
        for layer in self._layers:
            found = [seg for seg in layer if seg.name == path.segment]
            if found:
                return found[path.occurrence - 1] if len(found) >= path.occurrence else None
        return None

    def value(self, paths: Sequence[FieldPath]) -> tuple[str | None, FieldPath | None]:
        """The first non-empty value among *paths*, with the path it came from."""
        for path in paths:
            seg = self.at(path)
            if seg is None:
                continue
            value = _selected_value(seg, path) if path.selects else seg.value(path)
            if value is not None:
                return value, path
        return None, None

    def repetitions(self, paths: Sequence[FieldPath]) -> Repetitions:
        """The repetitions of the first of *paths* whose field holds any text."""
        return self.repetitions_from(paths)[0]

    def repetitions_from(self, paths: Sequence[FieldPath]) -> tuple[Repetitions, FieldPath | None]:
        """:meth:`repetitions` and the path they came from (None when every field is empty)."""
        for path in paths:
            seg = self.at(path)
            reps = path.pick(seg.repetitions(path.field)) if seg else []
            if any(s for rep in reps for comp in rep for s in comp):
                return reps, path
        return [], None


def _selected_value(seg: SegmentView, path: FieldPath) -> str | None:
    """The value at *path* in the repetition it selects (``PID-3[.5=MR].1``), or None."""
    reps = path.pick(seg.repetitions(path.field))
    if not reps:
        return None
    if path.whole:
        return seg._whole(reps[0])
    return component(reps[0], path.component or 1, path.subcomponent or 1)
