"""HL7 v2 field paths, compiled once, read and written through :mod:`mappings.hl7v2.reader`.

Grammar (segment ids are case-insensitive; every number is 1-based, at most 999)::

    PID                 a segment (every PID; get reads the first one's text)
    OBX[3]              the third OBX segment
    PID-3               field 3: reads the first repetition's first component
    PID-3.4             component 4 (its first subcomponent)
    PID-3.4.2           subcomponent 2 of component 4
    PID-3[2].1          the second repetition
    PID-3[.5=MR].1      the repetition whose component 5 is MR (``[.4.1=X]`` for a subcomponent)
    OBX[3]-5            field 5 of the third OBX
    OBR-18!             the first repetition whole, component separators kept as data

``!`` reads a field whole: an ST or ID field whose sender put a component separator in it
(``OBR-18`` = ``MR^20061213-0007``) reads as ``MR^20061213-0007``, not ``MR``. MSH-1 (the
field separator) and MSH-2 (the encoding characters) always read whole, as sent; the same
holds for FHS and BHS.

What each operation means:

* ``get(scope)``: the value in the first occurrence of the segment (or the one named), the
  first repetition (or the one selected); ``""`` when the segment, field or part is absent.
* ``get_all(scope)``: the value in every occurrence and every selected repetition (an empty
  field has no repetition); ``[]`` when absent.
* ``set(scope, value)``: writes where ``get`` reads, escaping *value* (``encoded=True``
  writes HL7 text as is, components in the message's delimiters). A path without a
  component or repetition replaces the whole field; a missing segment is appended (as is
  the occurrence after the last); missing fields, repetitions and components are padded;
  a ``[.5=MR]`` that no repetition matches appends one that does.
* ``delete(scope)``: acts on everything ``get_all`` reads: removes segments (``NTE``,
  ``OBX[2]``), removes repetitions (``PID-3[2]``, ``PID-3[.5=SS]``), or clears a field or
  component.

A malformed path raises :class:`PathError` when compiled, never when used.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mappings.hl7v2.reader import Message, Segment, _Scope

_MAX = 999
_PATH = re.compile(
    r"(?P<seg>[A-Za-z][A-Za-z0-9]{2})(?:\[(?P<occ>\d+)\])?"
    r"(?:-(?P<field>\d+)"
    r"(?:\[(?:(?P<rep>\d+)|\.(?P<mc>\d+)(?:\.(?P<ms>\d+))?=(?P<mv>[^\]]*))\])?"
    r"(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?(?P<whole>!)?)?"
)
_HEADERS = frozenset({"MSH", "FHS", "BHS"})


class PathError(ValueError):
    """A field path that does not follow the grammar; ``reason`` says what is wrong."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path!r} is not a field path: {reason}")
        self.path = path
        self.reason = reason


def _diagnose(text: str) -> str:
    """Why *text* is not a path, in words."""
    if not text:
        return "it is empty"
    if not re.match(r"[A-Za-z][A-Za-z0-9]{2}(?![A-Za-z0-9])", text):
        return "it must start with a segment id: a letter then two letters or digits (PID, ZDS)"
    if text.count("[") != text.count("]"):
        return "a '[' is not closed by ']'"
    match = _PATH.match(text)
    end = match.end() if match else 3
    rest = text[end:]
    if rest.startswith("!") or "!" in text[:end]:
        return "'!' reads a field or repetition whole, so it cannot follow a component"
    hint = _HINTS.get(rest[:1], "expected -FIELD, [N], [.C=VALUE], .COMPONENT or a final '!'")
    return f"unexpected {rest[:12]!r} at position {end + 1}: {hint}"


_HINTS = {
    "-": "'-' is followed by a field number (PID-3)",
    "[": "a selector is [N] or [.C=VALUE] (PID-3[2], PID-3[.5=MR], OBX[3]-5)",
    ".": "a component or subcomponent is a number (PID-3.1, PID-3.4.1)",
}


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if not 1 <= value <= _MAX:
        raise ValueError(f"numbers run from 1 to {_MAX}, not {value}")
    return value


@lru_cache(maxsize=4096)
def compile_path(text: str) -> Path:
    """Compile *text* (grammar in the module docstring); raise :class:`PathError` if malformed.

    Cached: compiling the same text again returns the same object.
    """
    if not isinstance(text, str):
        raise PathError(repr(text), f"a path is a string, not {type(text).__name__}")
    stripped = text.strip()
    match = _PATH.fullmatch(stripped)
    if match is None:
        raise PathError(text, _diagnose(stripped))
    g = match.groupdict()
    try:
        nums = {k: _number(g[k]) for k in ("occ", "field", "rep", "mc", "ms", "comp", "sub")}
    except ValueError as exc:
        raise PathError(text, str(exc)) from None
    if g["whole"] and nums["comp"] is not None:
        raise PathError(
            text, "'!' reads a field or repetition whole, so it cannot follow a component"
        )
    match_on = (nums["mc"] or 1, nums["ms"], g["mv"]) if g["mc"] else None
    return Path(
        stripped,
        g["seg"].upper(),
        nums["occ"],
        nums["field"],
        nums["rep"],
        match_on,
        nums["comp"],
        nums["sub"],
        bool(g["whole"]),
    )


class Path:
    """A compiled field path: read it with :meth:`get` / :meth:`get_all`, write with :meth:`set`.

    *scope* is a :class:`~mappings.hl7v2.reader.Message` or one of its groups.
    """

    __slots__ = (
        "text",
        "segment",
        "occurrence",
        "field",
        "repetition",
        "match",
        "component",
        "subcomponent",
        "whole",
        "_atomic",
        "_first",
        "_simple",
    )

    def __init__(
        self,
        text: str,
        segment: str,
        occurrence: int | None,
        field: int | None,
        repetition: int | None,
        match: tuple[int, int | None, str] | None,
        component: int | None,
        subcomponent: int | None,
        whole: bool,
    ) -> None:
        self.text = text
        self.segment = segment
        self.occurrence = occurrence
        self.field = field
        self.repetition = repetition
        self.match = match
        self.component = component
        self.subcomponent = subcomponent
        self.whole = whole
        self._atomic = segment in _HEADERS and field in (1, 2)
        self._first = repetition is None and match is None
        # the first repetition's first component's first subcomponent: read with partitions
        self._simple = (
            self._first and not whole and component in (None, 1) and (subcomponent in (None, 1))
        )

    def __repr__(self) -> str:
        return f"compile_path({self.text!r})"

    def __str__(self) -> str:
        return self.text

    # --- reading -------------------------------------------------------------------------------

    def _segments(self, scope: _Scope) -> list[Segment]:
        segs = scope.find(self.segment)
        n = self.occurrence
        return segs if n is None else segs[n - 1 : n]

    def get(self, scope: _Scope) -> str:
        """The value this path names, unescaped; ``""`` when absent."""
        segs = scope.find(self.segment)
        n = self.occurrence or 1
        if len(segs) < n:
            return ""
        seg = segs[n - 1]
        if self.field is None:
            return seg.text
        msg = scope.msg
        fields = seg.fields(msg.fs)
        if self.field >= len(fields):
            return ""
        value = fields[self.field]
        if self._atomic:
            return value if self._atomic_part() else ""
        if self._simple and msg.rep and msg.comp and msg.sub:
            value = value.partition(msg.rep)[0].partition(msg.comp)[0].partition(msg.sub)[0]
            return msg.unescape(value) if msg.esc in value else value
        if self._first:
            rep = value.partition(msg.rep)[0] if msg.rep else value
        else:
            found = self._reps(msg, value)
            if not found:
                return ""
            rep = found[0]
        return self._leaf(msg, rep)

    def get_whole(self, scope: _Scope) -> str:
        """The selected repetition whole, as ``!`` reads it, whatever this path's components."""
        return compile_path(self._whole_text()).get(scope)

    def get_all(self, scope: _Scope) -> list[str]:
        """Every value this path names (each occurrence, each selected repetition)."""
        segs = self._segments(scope)
        if self.field is None:
            return [s.text for s in segs]
        msg = scope.msg
        out: list[str] = []
        for seg in segs:
            fields = seg.fields(msg.fs)
            if self.field >= len(fields) or not fields[self.field]:
                continue
            if self._atomic:
                out += [fields[self.field]] if self._atomic_part() else []
                continue
            out += [self._leaf(msg, rep) for rep in self._reps(msg, fields[self.field])]
        return out

    def _atomic_part(self) -> bool:
        return (
            self.component in (None, 1)
            and self.subcomponent in (None, 1)
            and (self.repetition in (None, 1))
            and self.match is None
        )

    def _reps(self, msg: Message, value: str) -> list[str]:
        """The repetitions of *value* this path selects."""
        reps = value.split(msg.rep) if msg.rep else [value]
        return [reps[i] for i in self._chosen(msg, reps)]

    def _chosen(self, msg: Message, reps: list[str]) -> range | list[int]:
        """The indexes of the repetitions this path selects."""
        if self.repetition is not None:
            return range(self.repetition - 1, min(self.repetition, len(reps)))
        if self.match is not None:
            comp, sub, wanted = self.match
            return [i for i, r in enumerate(reps) if _part(msg, r, comp, sub) == wanted]
        return range(len(reps))

    def _leaf(self, msg: Message, rep: str) -> str:
        if self.whole:
            return msg.unescape(rep)
        return _part(msg, rep, self.component or 1, self.subcomponent)

    def _whole_text(self) -> str:
        head = self.text.split("-", 1)[0]
        if self.field is None:
            return head
        sel = f"[{self.repetition}]" if self.repetition else ""
        if self.match is not None:
            comp, sub, value = self.match
            sel = f"[.{comp}{f'.{sub}' if sub else ''}={value}]"
        return f"{head}-{self.field}{sel}!"

    # --- writing -------------------------------------------------------------------------------

    def set(self, scope: _Scope, value: str, *, encoded: bool = False) -> None:
        """Write *value* where :meth:`get` reads (see the module docstring)."""
        if self.field is None:
            raise ValueError(f"{self.text} names a segment: add one with add_segment")
        if self._atomic:
            raise ValueError(f"{self.text} holds the delimiters and is not written")
        msg = scope.msg
        text = value if encoded else msg.escape(value)
        seg = self._target(scope)
        fields = list(seg.fields(msg.fs))
        fields += [""] * (self.field + 1 - len(fields))
        if self._first and self.component is None:
            fields[self.field] = text
        else:
            fields[self.field] = self._set_rep(msg, fields[self.field], text)
        seg.store(fields, msg.fs)

    def _target(self, scope: _Scope) -> Segment:
        segs = scope.find(self.segment)
        n = self.occurrence or 1
        if n <= len(segs):
            return segs[n - 1]
        if n > len(segs) + 1:
            raise ValueError(f"{self.text}: there are only {len(segs)} {self.segment} segments")
        return scope.add_segment(self.segment)

    def _set_rep(self, msg: Message, field: str, text: str) -> str:
        reps = field.split(msg.rep) if msg.rep and field else [field]
        if self.repetition is not None:
            reps += [""] * (self.repetition - len(reps))
            at = self.repetition - 1
        elif self.match is not None:
            comp, sub, wanted = self.match
            at = next((i for i, r in enumerate(reps) if _part(msg, r, comp, sub) == wanted), -1)
            if at < 0:
                reps = [r for r in reps if r] + [_put(msg, "", comp, sub, msg.escape(wanted))]
                at = len(reps) - 1
        else:
            at = 0
        if self.component is None:
            reps[at] = text
        else:
            reps[at] = _put(msg, reps[at], self.component, self.subcomponent, text)
        return _join(msg.rep, reps)

    def delete(self, scope: _Scope) -> None:
        """Remove or clear everything :meth:`get_all` reads (see the module docstring)."""
        msg = scope.msg
        segs = self._segments(scope)
        if self.field is None:
            for seg in segs:
                msg.remove(seg)
            return
        if self._atomic:
            raise ValueError(f"{self.text} holds the delimiters and is not deleted")
        for seg in segs:
            fields = list(seg.fields(msg.fs))
            if self.field < len(fields) and fields[self.field]:
                fields[self.field] = self._cleared(msg, fields[self.field])
                seg.store(fields, msg.fs)

    def _cleared(self, msg: Message, field: str) -> str:
        reps = field.split(msg.rep) if msg.rep else [field]
        chosen = set(self._chosen(msg, reps))
        if self.component is None:
            if self._first:
                return ""
            return _join(msg.rep, [r for i, r in enumerate(reps) if i not in chosen])
        return _join(
            msg.rep,
            [
                _put(msg, r, self.component, self.subcomponent, "") if i in chosen else r
                for i, r in enumerate(reps)
            ],
        )


def _part(msg: Message, rep: str, comp: int, sub: int | None) -> str:
    """Component *comp*, subcomponent *sub* (first when None) of one repetition, unescaped."""
    if msg.comp:
        parts = rep.split(msg.comp, comp)
        if len(parts) < comp:
            return ""
        value = parts[comp - 1]
    elif comp == 1:
        value = rep
    else:
        return ""
    if msg.sub:
        n = sub or 1
        subs = value.split(msg.sub, n)
        if len(subs) < n:
            return ""
        value = subs[n - 1]
    elif sub not in (None, 1):
        return ""
    return msg.unescape(value) if msg.esc and msg.esc in value else value


def _put(msg: Message, rep: str, comp: int, sub: int | None, text: str) -> str:
    """*rep* with component *comp* (subcomponent *sub*, when given) replaced by *text*."""
    if not msg.comp and comp > 1:
        raise ValueError("the message has no component separator")
    comps = rep.split(msg.comp) if msg.comp else [rep]
    comps += [""] * (comp - len(comps))
    if sub is None:
        comps[comp - 1] = text
    else:
        if not msg.sub and sub > 1:
            raise ValueError("the message has no subcomponent separator")
        subs = comps[comp - 1].split(msg.sub) if msg.sub else [comps[comp - 1]]
        subs += [""] * (sub - len(subs))
        subs[sub - 1] = text
        comps[comp - 1] = msg.sub.join(subs)
    return msg.comp.join(comps) if msg.comp else comps[0]


def _join(sep: str, parts: list[str]) -> str:
    return sep.join(parts) if sep else (parts[0] if parts else "")
