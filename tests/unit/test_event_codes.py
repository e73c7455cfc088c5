"""One log event code, one event: an operator who greps ``DCM-201`` finds one kind of line.

Reads every shipped package with ``ast`` and collects each code with its message, from
``event(log, "XXX-NNN", "message", ...)`` and from plain ``log.<level>("XXX-NNN message
...")`` calls. The same event may be logged from several places (same code, same message);
one code for two different messages is the bug."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "channels", "mappings", "inference", "radbridge_fhir")
LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})
CODE = re.compile(r"^([A-Z]{2,6}-\d{3}) (.+)$")

Uses = dict[str, dict[str, list[str]]]  # code -> message -> ["file:line", ...]


def _name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def _literal_head(node: ast.expr) -> str | None:
    """The leading literal text of a str constant or an f-string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def _event_of(call: ast.Call) -> tuple[str, str] | None:
    """(code, message) of one logging call, or None when it logs no coded event."""
    name = _name(call)
    if name == "event" and len(call.args) >= 3:
        code, text = (_literal_head(a) for a in call.args[1:3])
        if code is not None and text is not None:
            return code, text
        return None
    if name in LEVELS and call.args:
        args = call.args[1:] if name == "log" else call.args
        head = _literal_head(args[0]) if args else None
        match = CODE.match(head or "")
        if match:  # "WEB-399 unexpected error storing a part channel=%s": the words only
            return match.group(1), re.split(r" \w+=|%", match.group(2))[0].strip()
    return None


def collect(root: Path, packages: tuple[str, ...] = PACKAGES) -> Uses:
    uses: Uses = defaultdict(lambda: defaultdict(list))
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and (found := _event_of(node)):
                    code, text = found
                    uses[code][text].append(f"{path.relative_to(root)}:{node.lineno}")
    return uses


def test_no_event_code_names_two_different_events() -> None:
    uses = collect(REPO)
    twice = {code: dict(texts) for code, texts in uses.items() if len(texts) > 1}
    assert not twice, f"one code, several messages: {twice}"


def test_every_event_call_names_its_code_and_message_as_literals() -> None:
    loose = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and _name(node) == "event"
                    and (len(node.args) < 3 or not all(_literal_head(a) for a in node.args[1:3]))
                ):
                    loose.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not loose, f"event() without a literal code and message: {loose}"


def test_the_scan_finds_a_duplicate_in_both_call_styles(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        'event(log, "DCM-201", "instance stored", sop=1)\n'
        'log.exception("WEB-399 unexpected error storing a part channel=%s", name)\n'
    )
    (pkg / "b.py").write_text(
        'event(log, "DCM-201", "association accepted")\n'
        'log.exception(f"WEB-399 unexpected poller error channel={name}")\n'
        'event(log, "DCM-200", "listening")\n'
        'event(log, "DCM-200", "listening")\n'
    )
    uses = collect(tmp_path, ("pkg",))
    assert set(uses["DCM-201"]) == {"instance stored", "association accepted"}
    assert set(uses["WEB-399"]) == {"unexpected error storing a part", "unexpected poller error"}
    assert list(uses["DCM-200"]) == ["listening"]  # one event logged from two places is fine
