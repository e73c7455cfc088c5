"""What the HL7 transformer steps (:mod:`mappings.hl7v2.steps`) share: paths checked for a
step's key, where a step acts (each occurrence of a segment, see that module's docstring),
writing without padding for nothing, templates with ``{PATH}`` references, and changing a
value in place part by part."""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.config.steps import StepContext, StepError
from mappings.hl7v2.reader import Group, Message, Segment
from mappings.hl7v2.readpath import Path, PathError, compile_path

Scope = Message | Group
Apply = Callable[[Message], Message | None]
HEADERS = frozenset({"MSH", "FHS", "BHS"})
_REF = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def noop(message: Message) -> None:
    """What a step that did not compile applies (its configuration is never run)."""
    return None


def atomic(path: Path) -> bool:
    """MSH-1 and MSH-2 (FHS, BHS): the delimiters themselves."""
    return path.segment in HEADERS and path.field in (1, 2)


def path_at(ctx: StepContext, key: str, *, segment: bool = False, write: bool = False,
            text: str | None = None) -> Path | None:
    """The path at *key* (or *text*), compiled; a segment path only where *segment*."""
    text = ctx.string(key) if text is None else text
    if text is None:
        return None
    try:
        path = compile_path(text)
    except PathError as exc:
        ctx.problem(key, str(exc))
        return None
    if segment and path.field is not None:
        ctx.problem(key, f"{text} names a field: give a segment (NTE, OBX[2])")
        return None
    if not segment and path.field is None:
        ctx.problem(key, f"{text} names a segment: give a field (PID-3, OBX-5.1)")
        return None
    if write and atomic(path):
        ctx.problem(key, f"{text} holds the delimiters and is not written")
        return None
    return path


def scopes(path: Path, msg: Message, create: bool) -> list[Scope]:
    """Each occurrence of *path*'s segment as a scope of its own (see the module docstring)."""
    if path.occurrence is not None:
        return [msg]
    segs = msg.find(path.segment)
    if len(segs) <= 1:
        return [msg] if segs or create else []
    return [Group(msg, [seg]) for seg in segs]


def source_of(src: Path, target: Path, scope: Scope, msg: Message) -> Scope:
    """Where *src* is read when writing *target* in *scope*: the same occurrence, if it can."""
    return scope if src.segment == target.segment and src.occurrence is None else msg


def write(path: Path, scope: Scope, text: str) -> None:
    """Write encoded *text*; nothing is padded or created to write an empty value."""
    if not text and not path.get(scope):
        return
    try:
        path.set(scope, text, encoded=True)
    except ValueError as exc:  # readpath's reasons name paths, never values
        raise StepError(str(exc)) from None


def value_path(path: Path) -> Path:
    """Where a value changed in place is written: a field path's first component."""
    if path.component is None and not path.whole:
        return compile_path(f"{path.text}.1")
    return path


def field_slot(path: Path, scope: Scope) -> tuple[Segment, list[str]] | None:
    """The segment *path* names in *scope* and its fields (None: absent)."""
    segs = scope.find(path.segment)
    n = path.occurrence or 1
    if len(segs) < n:
        return None
    fields = segs[n - 1].fields(scope.msg.fs)
    return (segs[n - 1], fields) if path.field is not None and path.field < len(fields) else None


def encoded(path: Path, scope: Scope) -> str:
    """The field *path* names, as encoded (every repetition and component)."""
    found = field_slot(path, scope)
    return found[1][path.field or 0] if found is not None else ""


def literal(msg: Message, text: str) -> str:
    """HL7 text from the config, with what can never be inside a field escaped."""
    if msg.fs in text:
        text = text.replace(msg.fs, f"{msg.esc}F{msg.esc}" if msg.esc else " ")
    return text.replace("\r", " ").replace("\n", " ")


# --- templates ---------------------------------------------------------------------------------


def template(ctx: StepContext, key: str) -> list[str | Path] | None:
    """``"{PID-3} {OBR-4.2}"`` as literal parts and compiled paths (``{{`` is a brace)."""
    text = ctx.string(key)
    if text is None:
        return None
    parts: list[str | Path] = []
    pos = 0
    for match in [*_REF.finditer(text), None]:
        chunk = text[pos:match.start() if match else len(text)]
        if "{" in chunk or "}" in chunk:
            ctx.problem(key, "a lone { or }: a field reference is {PID-3}; write {{ or }} for "
                             "a brace")
            return None
        parts.append(chunk)
        if match is None:
            break
        pos = match.end()
        if match.group(1) is None:
            parts.append(match.group(0)[0])
            continue
        path = path_at(ctx, key, text=match.group(1).strip())
        if path is None:
            return None
        parts.append(path)
    return [p for p in parts if p != ""]


def render(parts: list[str | Path], target: Path | None, scope: Scope, msg: Message) -> str:
    """A template's text for *scope*: literal parts as they are, references escaped."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            where = source_of(part, target, scope, msg) if target is not None else msg
            out.append(msg.escape(part.get(where)))
    return "".join(out)


def occurrences(path: Path, msg: Message) -> list[Segment]:
    """The segments a segment path names: every one, or the occurrence it gives."""
    segs = msg.find(path.segment)
    return segs if path.occurrence is None else segs[path.occurrence - 1:path.occurrence]


def in_place(ctx: StepContext, key: str, change: Callable[[str], str]) -> Apply:
    """A step that changes a value in place, part by part (see the module docstring)."""
    path = path_at(ctx, key, write=True)
    if path is None:
        return noop

    def apply(msg: Message) -> None:
        for scope in scopes(path, msg, create=False):
            if path.component is not None:
                value = path.get(scope)
                new = change(value)
                if new != value:
                    write(path, scope, msg.escape(new))
                continue
            slot = field_slot(path, scope)
            if slot is not None and slot[1][path.field or 0]:
                change_field(msg, path, slot, change)

    return apply


def change_field(msg: Message, path: Path, slot: tuple[Segment, list[str]],
                  change: Callable[[str], str]) -> None:
    seg, fields = slot
    index = path.field or 0
    reps = fields[index].split(msg.rep) if msg.rep else [fields[index]]
    chosen = set(path._chosen(msg, reps))  # noqa: SLF001  (the same package's selection)

    def part(text: str) -> str:
        value = msg.unescape(text)
        new = change(value)
        return text if new == value else msg.escape(new)

    def split(text: str, seps: list[str]) -> str:
        if not seps or not seps[0]:
            return part(text)
        return seps[0].join(split(piece, seps[1:]) for piece in text.split(seps[0]))

    new = [split(r, [msg.comp, msg.sub]) if i in chosen else r for i, r in enumerate(reps)]
    joined = (msg.rep or "").join(new)
    if joined != fields[index]:
        fields = list(fields)
        fields[index] = joined
        seg.store(fields, msg.fs)
