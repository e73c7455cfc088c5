"""The transformer steps of HL7 v2 messages, registered by kind with ``engine.registry``.

Each compiler checks its step's table once, at config load (paths with
:func:`~mappings.hl7v2.readpath.compile_path`, regexes, CEL, lookups, scripts), reports every
problem through the :class:`~engine.config.steps.StepContext`, and returns ``apply(message)``,
which changes a :class:`~mappings.hl7v2.reader.Message` in place (a script may return another).

Where a step acts: a path that names no occurrence (``OBX-5``) acts on every occurrence of its
segment, each on its own (``{ copy = "OBX-3.2", to = "OBX-4" }`` copies within each OBX; a
path into another segment reads that segment's first occurrence); ``OBX[2]-5`` acts on the
second alone. ``set``, ``copy`` and a ``map`` with ``to`` create a segment that is absent; the
steps that change a value in place do nothing where the value is empty.

What is written: ``value`` and the literal text of a ``template`` or ``add_segment`` are HL7
text (``^`` separates components, as in the message); a field reference ``{PID-3.1}``, an
``expr`` result, a looked-up or copied value is written as a value (escaped). A path naming a
whole field (``PID-3``) in ``set``, ``copy`` or ``map ... to`` replaces the whole field; the
steps that change a value in place keep its other components (``format_date = "PID-7"`` changes
PID-7.1; ``upper = "PID-5"`` upper-cases every component of PID-5).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

from engine.config.steps import StepContext, StepError, lookup_or_raise
from engine.registry import register_step
from mappings.hl7v2 import dates
from mappings.hl7v2 import stepkit as kit
from mappings.hl7v2.reader import Message, Segment
from mappings.hl7v2.readpath import Path
from mappings.hl7v2.stepkit import Apply, Scope

_SEGMENT_TEXT = re.compile(r"[A-Z][A-Z0-9]{2}(\||\Z)")


@register_step("hl7", "set", "write a field: value (HL7 text), template (with {PID-3} "
                             "references) or expr (CEL)", keys=("value", "template", "expr"))
def _set(raw: dict[str, Any], ctx: StepContext) -> Apply:
    target = kit.path_at(ctx, "set", write=True)
    given = [k for k in ("value", "template", "expr") if k in raw]
    if len(given) != 1:
        ctx.problem(None, f"a set step needs exactly one of value, template, expr "
                          f"(found: {', '.join(given) or 'none'})")
        return kit.noop
    make: Callable[[Scope, Message], str] | None = None
    if given[0] == "value":
        text = ctx.string("value")
        make = None if text is None else (lambda scope, msg: kit.literal(msg, text))
    elif given[0] == "template":
        parts = kit.template(ctx, "template")
        make = None if parts is None else (
            lambda scope, msg: kit.literal(msg, kit.render(parts, target, scope, msg)))
    else:
        value = ctx.value("expr")
        make = None if value is None else (lambda scope, msg: msg.escape(value(msg)))
    if target is None or make is None:
        return kit.noop

    def apply(msg: Message) -> None:
        for scope in kit.scopes(target, msg, create=True):
            kit.write(target, scope, make(scope, msg))

    return apply


@register_step("hl7", "copy", "copy a field to another (whole, with its repetitions and "
                              "components, when both paths name whole fields)", keys=("to",))
def _copy(raw: dict[str, Any], ctx: StepContext) -> Apply:
    src, dst = kit.path_at(ctx, "copy"), kit.path_at(ctx, "to", write=True)
    if src is None or dst is None:
        return kit.noop
    whole = all(p.component is None and p.repetition is None and p.match is None
                and not p.whole and not kit.atomic(p) for p in (src, dst))

    def apply(msg: Message) -> None:
        for scope in kit.scopes(dst, msg, create=True):
            where = kit.source_of(src, dst, scope, msg)
            kit.write(dst, scope, kit.encoded(src, where) if whole else msg.escape(src.get(where)))

    return apply


@register_step("hl7", "map", "translate a field through a [[lookup]] table (several fields: "
                             "a key of several columns)",
               keys=("lookup", "to", "column", "on_missing", "default"))
def _map(raw: dict[str, Any], ctx: StepContext) -> Apply:
    texts = ctx.strings("map") or []
    sources = [kit.path_at(ctx, "map", text=t) for t in texts]
    table = ctx.lookup()
    if len(texts) > 1 and "to" not in raw:
        ctx.problem(None, "a map step with several key fields needs to (where the value goes)")
    target = (kit.path_at(ctx, "to", write=True) if "to" in raw
              else kit.value_path(sources[0]) if sources and sources[0] is not None else None)
    column = ctx.string("column", "") or None
    how = {"column": column,
           "on_missing": ctx.choice("on_missing", ("keep", "default", "error", "filter"), None),
           "default": ctx.string("default") if "default" in raw else None}
    if table is not None:
        if texts and len(texts) != len(table.key):
            ctx.problem("map", f"lookup {table.name} is keyed by {len(table.key)} column(s) "
                               f"({', '.join(table.key)}): give as many fields")
        if column and table.columns is not None and column not in table.columns:
            ctx.problem("column", f"no column {column!r} in lookup {table.name} (columns: "
                                  f"{', '.join(table.columns)})")
    if table is None or target is None or None in sources or not sources:
        return kit.noop
    keys = [p for p in sources if p is not None]

    def apply(msg: Message) -> None:
        for scope in kit.scopes(target, msg, create="to" in raw):
            key = tuple(p.get(kit.source_of(p, target, scope, msg)) for p in keys)
            if not any(key):
                continue
            value = lookup_or_raise(table, key, **how)
            if value is not None:
                kit.write(target, scope, msg.escape(value))

    return apply


@register_step("hl7", "delete", "remove segments (NTE, OBX[2]), repetitions (PID-3[2], "
                                "PID-3[.5=SS]) or clear a field or component")
def _delete(raw: dict[str, Any], ctx: StepContext) -> Apply:
    text = ctx.string("delete")
    path = kit.path_at(ctx, "delete", segment=text is not None and "-" not in text, write=True)
    if path is None:
        return kit.noop
    if path.field is None and path.segment in kit.HEADERS:
        ctx.problem("delete", f"{path.segment} is the message header and is not deleted")
        return kit.noop
    return lambda msg: path.delete(msg)


def _anchor(ctx: StepContext, key: str) -> Path | None:
    path = kit.path_at(ctx, key, segment=True)
    if path is not None and key == "before" and path.segment in kit.HEADERS:
        ctx.problem(key, f"nothing goes before {path.segment}")
        return None
    return path


@register_step("hl7", "add_segment", "add a segment (a template of HL7 text: "
                                     "\"ZRB|{MSH-10}\") after a segment, else at the end",
               keys=("after",))
def _add_segment(raw: dict[str, Any], ctx: StepContext) -> Apply:
    parts = kit.template(ctx, "add_segment")
    head = parts[0] if parts else ""
    if parts is not None and not (isinstance(head, str) and _SEGMENT_TEXT.match(head)):
        ctx.problem("add_segment", "the text starts with a segment id and |: \"ZRB|...\"")
        return kit.noop
    after = _anchor(ctx, "after") if "after" in raw else None
    if parts is None:
        return kit.noop

    def apply(msg: Message) -> None:
        text = kit.render(parts, None, msg, msg)
        if msg.fs != "|":
            text = text.replace("|", msg.fs)
        anchors = kit.occurrences(after, msg) if after is not None else []
        try:
            msg.add_segment(text.replace("\r", " "), after=anchors[-1] if anchors else None)
        except ValueError as exc:
            raise StepError(str(exc)) from None

    return apply


@register_step("hl7", "move", "move segments after (the last of) or before (the first of) "
                              "another: reorder OBX rows, move an NTE", keys=("after", "before"))
def _move(raw: dict[str, Any], ctx: StepContext) -> Apply:
    what = kit.path_at(ctx, "move", segment=True)
    given = [k for k in ("after", "before") if k in raw]
    if len(given) != 1:
        ctx.problem(None, "a move step needs exactly one of after, before")
        return kit.noop
    anchor = _anchor(ctx, given[0])
    if what is not None and what.segment in kit.HEADERS:
        ctx.problem("move", f"{what.segment} is the message header and stays first")
        return kit.noop
    if what is None or anchor is None:
        return kit.noop
    after = given[0] == "after"

    def apply(msg: Message) -> None:
        moving = kit.occurrences(what, msg)
        anchors = [s for s in kit.occurrences(anchor, msg) if s not in moving]
        if not moving or not anchors:
            return
        texts = [s.text for s in moving]
        for seg in moving:
            msg.remove(seg)
        ref = anchors[-1] if after else _previous(msg, anchors[0])
        for text in texts:
            ref = msg.add_segment(text, after=ref)

    return apply


def _previous(msg: Message, seg: Segment) -> Segment:
    segs = msg.segments()
    return segs[segs.index(seg) - 1]  # never the header: nothing goes before it


@register_step("hl7", "format_date", "rewrite a date: from and to are DTM (HL7) or strftime "
                                     "formats", keys=("from", "to", "on_invalid"))
def _format_date(raw: dict[str, Any], ctx: StepContext) -> Apply:
    path = kit.path_at(ctx, "format_date", write=True)
    formats = [ctx.string("from", dates.DTM), ctx.string("to", dates.DTM)]
    for key, fmt in zip(("from", "to"), formats, strict=True):
        why = dates.check_format(fmt) if fmt is not None else None
        if why:
            ctx.problem(key, why)
            return kit.noop
    keep = ctx.choice("on_invalid", ("error", "keep"), "error") == "keep"
    src, dst = formats
    if path is None or src is None or dst is None:
        return kit.noop
    target = kit.value_path(path)

    def apply(msg: Message) -> None:
        for scope in kit.scopes(target, msg, create=False):
            value = target.get(scope)
            if not value:
                continue
            try:
                out = dates.write(dates.read(value, src), dst)
            except ValueError as exc:
                if keep:
                    continue
                raise StepError(f"{path.text}: {exc}") from None
            kit.write(target, scope, msg.escape(out))

    return apply


@register_step("hl7", "replace", "regex replace in a field: pattern, with (\\1 for a group)",
               keys=("pattern", "with"))
def _replace(raw: dict[str, Any], ctx: StepContext) -> Apply:
    pattern, repl = ctx.string("pattern"), ctx.string("with", "")
    if pattern is None or repl is None:
        return kit.noop
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        ctx.problem("pattern", f"regex does not compile: {exc}")
        return kit.noop
    try:
        regex.sub(repl, "")
    except (re.error, IndexError) as exc:
        ctx.problem("with", f"the replacement does not fit the pattern: {exc}")
        return kit.noop
    return kit.in_place(ctx, "replace", lambda value: regex.sub(repl, value))


@register_step("hl7", "upper", "upper-case a field (every component) or a component")
def _upper(raw: dict[str, Any], ctx: StepContext) -> Apply:
    return kit.in_place(ctx, "upper", str.upper)


@register_step("hl7", "lower", "lower-case a field (every component) or a component")
def _lower(raw: dict[str, Any], ctx: StepContext) -> Apply:
    return kit.in_place(ctx, "lower", str.lower)


@register_step("hl7", "script", "call a Python function module:function(message) -> message "
                                "(code: reviewed and deployed like code)")
def _script(raw: dict[str, Any], ctx: StepContext) -> Apply:
    ref = ctx.string("script")
    if ref is None:
        return kit.noop
    module_name, _, name = ref.partition(":")
    if not module_name or not name.isidentifier():
        ctx.problem("script", "must name module:function (sitesteps:fix_pid)")
        return kit.noop
    if not ctx.load:
        return _unloaded(ref)
    try:
        module = _import(module_name, ctx.base_dir)
    except Exception as exc:  # whatever importing the site's code raises
        ctx.problem("script", f"cannot import {module_name}: {type(exc).__name__}: {exc}")
        return kit.noop
    function = getattr(module, name, None)
    if not callable(function):
        ctx.problem("script", f"{module_name} has no function {name}")
        return kit.noop

    def apply(msg: Message) -> Message | None:
        out = function(msg)
        if out is None or isinstance(out, Message):
            return out
        raise StepError(f"{ref} returned {type(out).__name__}, not the message")

    return apply


def _unloaded(ref: str) -> Apply:
    def apply(msg: Message) -> None:
        raise StepError(f"{ref} was not loaded (configuration read without its files)")

    return apply


def _import(name: str, base_dir: FilePath) -> Any:
    """*name* imported from the Python path, else as a file beside ``channels.toml``."""
    if name in sys.modules:
        return sys.modules[name]
    local = base_dir.joinpath(*name.split(".")).with_suffix(".py")
    if importlib.util.find_spec(name.split(".")[0]) is None and local.is_file():
        spec = importlib.util.spec_from_file_location(name, local)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {local}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)
