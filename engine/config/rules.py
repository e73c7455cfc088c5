"""Channel filters and content routes: rules on message fields, compiled once at load.

A rule is a TOML table, one of:

* a test on a field path (``field = "MSH-11"``) with one operator: ``eq = "T"``,
  ``in = ["CT", "MR"]``, ``matches = "^CT"`` (a Python regex, searched), ``exists = true``
  (the field has a value), ``empty = true`` (the field reads empty; a missing field does);
* ``not = <rule>``, ``all = [<rule>, ...]``, ``any = [<rule>, ...]``;
* ``expr = '<CEL>'``: a Common Expression Language expression (safe, not Turing-complete,
  compiled once) over ``msg``, a map whose keys are the field paths the expression names as
  ``msg["OBR-24"]`` (read before it runs; a missing field reads "").

Each may carry ``name``. A channel's ``filter`` is a rule or a list of rules, all of which a
message must pass (each named by its ``name`` or its position, ``filter[1]``); a
``forward_to`` entry ``{ to = "ch", when = <rule or CEL string> }`` is sent to only when
``when`` passes. Every rule compiles to one form, :class:`Rule`; the problems of a rule are
reported with its key path, for ``file:line: key: message``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine import registry

Test = Callable[[Any], bool]
Loc = tuple[str | int, ...]
_OPERATORS = ("eq", "in", "matches", "exists", "empty")
_COMBINERS = ("not", "all", "any", "expr")
_CEL_PATH = re.compile(r"""msg\s*\[\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*\]""")


class RuleError(Exception):
    """A rule that cannot be evaluated on one message (a CEL runtime error)."""


@dataclass(frozen=True)
class Rule:
    """A compiled rule: ``test(message)`` is True when the message passes."""

    name: str
    test: Test


@dataclass
class _Compiler:
    """Compiles rules against one field language, collecting (loc, message) problems."""

    fields: Any
    problems: list[tuple[Loc, str]]

    def rule(self, raw: Any, loc: Loc) -> Test:
        if isinstance(raw, str) and loc and loc[-1] == "when":
            return self.expr(raw, loc)
        if not isinstance(raw, dict):
            return self.fail(loc, "a rule is a table (field and operator, not, all, any, expr)")
        if "name" in raw and not isinstance(raw["name"], str):
            self.problems.append((loc + ("name",), "must be a string"))
        keys = [k for k in raw if k != "name"]
        heads = [k for k in keys if k in _COMBINERS or k == "field"]
        if len(heads) != 1:
            return self.fail(
                loc,
                "a rule needs exactly one of field, not, all, any, expr "
                f"(found: {', '.join(heads) or 'none'})",
            )
        head = heads[0]
        extra = [k for k in keys if k != head and (head != "field" or k not in _OPERATORS)]
        for key in extra:
            self.problems.append(
                (
                    loc + (key,),
                    f"unknown operator {key!r} (known: {', '.join(_OPERATORS + _COMBINERS)})",
                )
            )
        if head == "field":
            return self.leaf(raw, loc)
        if head == "not":
            inner = self.rule(raw["not"], loc + ("not",))
            return lambda m: not inner(m)
        if head == "expr":
            return self.expr(raw["expr"], loc + ("expr",))
        return self.combine(head, raw[head], loc + (head,))

    def fail(self, loc: Loc, message: str) -> Test:
        self.problems.append((loc, message))
        return lambda m: False

    def combine(self, how: str, raw: Any, loc: Loc) -> Test:
        if not isinstance(raw, list) or not raw:
            return self.fail(loc, "must be a non-empty list of rules")
        tests = [self.rule(r, loc + (i,)) for i, r in enumerate(raw)]
        if how == "all":
            return lambda m: all(t(m) for t in tests)
        return lambda m: any(t(m) for t in tests)

    def path(self, raw: Any, loc: Loc) -> Callable[[Any], str] | None:
        try:
            return self.fields.compile(raw)  # type: ignore[no-any-return]
        except ValueError as exc:
            self.problems.append((loc, str(exc)))
            return None

    def leaf(self, raw: dict[str, Any], loc: Loc) -> Test:
        ops = [k for k in raw if k in _OPERATORS]
        if len(ops) != 1:
            return self.fail(
                loc,
                "a field test needs exactly one operator of "
                f"{', '.join(_OPERATORS)} (found: {', '.join(ops) or 'none'})",
            )
        get = self.path(raw["field"], loc + ("field",))
        test = self.operator(ops[0], raw[ops[0]], loc + (ops[0],))
        if get is None or test is None:
            return lambda m: False
        return lambda m: test(get(m))

    def operator(self, op: str, arg: Any, loc: Loc) -> Callable[[str], bool] | None:
        if op == "eq" and isinstance(arg, str):
            return lambda v: v == arg
        if op == "in" and isinstance(arg, list) and all(isinstance(a, str) for a in arg):
            choices = frozenset(arg)
            return lambda v: v in choices
        if op in ("exists", "empty") and isinstance(arg, bool):
            want = arg if op == "exists" else not arg
            return lambda v: (v != "") == want
        if op == "matches" and isinstance(arg, str):
            try:
                pattern = re.compile(arg)
            except re.error as exc:
                self.problems.append((loc, f"regex does not compile: {exc}"))
                return None
            return lambda v: pattern.search(v) is not None
        kinds = {"eq": "a string", "in": "a list of strings", "matches": "a string (regex)"}
        self.problems.append((loc, f"must be {kinds.get(op, 'true or false')}"))
        return None

    def expr(self, raw: Any, loc: Loc) -> Test:
        compiled = self.program(raw, loc)
        if compiled is None:
            return lambda m: False
        return _cel_test(*compiled)

    def program(self, raw: Any, loc: Loc) -> tuple[Any, dict[str, Callable[[Any], str]]] | None:
        """A CEL program over ``msg`` and the readers of the paths it names (None: problems)."""
        if not isinstance(raw, str):
            self.problems.append((loc, "a CEL expression is a string"))
            return None
        import cel

        try:
            program = cel.compile(raw)
        except ValueError as exc:
            self.problems.append((loc, f"CEL does not compile: {str(exc).splitlines()[0]}"))
            return None
        unknown = sorted(set(program.variables()) - {"msg"})
        if unknown:
            self.problems.append((loc, f"unknown variable {unknown[0]!r} (the message is msg)"))
            return None
        paths: dict[str, Callable[[Any], str]] = {}
        for match in _CEL_PATH.finditer(raw):
            text = match.group(1) if match.group(1) is not None else match.group(2)
            get = self.path(text, loc)
            if get is None:
                return None
            paths[text] = get
        return program, paths


def _run_cel(program: Any, paths: dict[str, Callable[[Any], str]], message: Any) -> Any:
    context = {"msg": {text: get(message) for text, get in paths.items()}}
    try:
        return program.execute(context)
    except Exception as exc:  # the CEL runtime's errors are plain exceptions
        # its text may quote field values (patient data): only the type is kept
        raise RuleError(f"the expression failed ({type(exc).__name__})") from None


def _cel_test(program: Any, paths: dict[str, Callable[[Any], str]]) -> Test:
    def test(message: Any) -> bool:
        result = _run_cel(program, paths, message)
        if not isinstance(result, bool):
            raise RuleError(f"the expression gave {type(result).__name__}, not a boolean")
        return result

    return test


def _cel_value(program: Any, paths: dict[str, Callable[[Any], str]]) -> Callable[[Any], str]:
    def value(message: Any) -> str:
        result = _run_cel(program, paths, message)
        if isinstance(result, bool):
            return "true" if result else "false"
        if result is None:
            return ""
        if isinstance(result, str | int | float):
            return str(result)
        raise RuleError(f"the expression gave {type(result).__name__}, not a value")

    return value


def compile_when(raw: Any, loc: Loc, fields: Any) -> tuple[Test, list[tuple[Loc, str]]]:
    """A step's ``when`` (a rule, or a CEL string: *loc* ends with ``when``) and its problems."""
    compiler = _Compiler(fields, [])
    return compiler.rule(raw, loc), compiler.problems


def compile_value(raw: Any, loc: Loc, fields: Any
                  ) -> tuple[Callable[[Any], str], list[tuple[Loc, str]]]:
    """A CEL expression whose result is written as text (a step's ``expr``), and problems.

    A string is written as is, a number or boolean as CEL prints it, null as empty; a list
    or map raises RuleError when run, as does a runtime error (naming only its type)."""
    compiler = _Compiler(fields, [])
    compiled = compiler.program(raw, loc)
    if compiled is None:
        return (lambda m: ""), compiler.problems
    return _cel_value(*compiled), compiler.problems


def compile_filter(raw: Any, loc: Loc, fields: Any) -> tuple[list[Rule], list[tuple[Loc, str]]]:
    """A channel's ``filter`` (a rule or a list of rules) as named rules, and its problems."""
    compiler = _Compiler(fields, [])
    items = raw if isinstance(raw, list) else [raw]
    rules = []
    for i, item in enumerate(items):
        where = loc + (i,) if isinstance(raw, list) else loc
        default = f"filter[{i}]" if isinstance(raw, list) else "filter"
        name = item.get("name") if isinstance(item, dict) else None
        rules.append(Rule(name if isinstance(name, str) else default, compiler.rule(item, where)))
    return rules, compiler.problems


def compile_routes(
    forward_to: Any, loc: Loc, fields: Any
) -> tuple[dict[str, Rule], list[tuple[Loc, str]]]:
    """The ``when`` of each ``forward_to`` entry that has one, by destination, and problems."""
    compiler = _Compiler(fields, [])
    routes: dict[str, Rule] = {}
    for k, entry in enumerate(forward_to if isinstance(forward_to, list) else []):
        if isinstance(entry, dict) and "when" in entry:
            test = compiler.rule(entry["when"], loc + (k, "when"))
            routes[str(entry.get("to"))] = Rule(f"forward_to[{k}].when", test)
    return routes, compiler.problems


def field_language() -> Any:
    """The field language rules read with (HL7 v2 paths, from the registry)."""
    return registry.fields("hl7")


def check_rules(doc: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Every problem of every channel's ``filter`` and ``forward_to[].when``."""
    problems: list[tuple[Loc, str]] = []
    channels = doc.get("channel", [])
    for i, ch in enumerate(channels if isinstance(channels, list) else []):
        if not isinstance(ch, dict):
            continue
        if "filter" in ch:
            problems += compile_filter(ch["filter"], ("channel", i, "filter"), field_language())[1]
        problems += compile_routes(
            ch.get("forward_to"), ("channel", i, "forward_to"), field_language()
        )[1]
    return problems
