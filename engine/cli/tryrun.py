"""``radbridge try CHANNEL FILE...``: a dry run of messages through one channel.

Each FILE holds one message or several (separated by blank lines, one after another, an
HL7 batch, or MLLP-framed as ``radbridge send`` reads them); ``-`` reads standard input.
Every message goes through what the engine would do to it (``engine.flow.dryrun``):
intake's checks, the channel's filters, transformers and routes, and each destination's own
steps; nothing is stored, sent or logged. Printed per message: each step with its
field-level changes, the outcome (FILTERED by which rule, ERROR at which step and why, or
each destination with its payload) and the mapped layer. ``--json`` prints the same as JSON.

Exit status: 0 when no message ended in ERROR (or was refused), 1 when one did, 2 for a
usage or configuration problem (one ``file:line: key: message`` line each).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from channels.mllp.logfile import split_messages
from engine.config.schema import load_config
from engine.errors import ConfigErrors, ConfigProblem
from engine.flow.dryrun import Tried, flat_json, report, try_message
from engine.flow.processors import runner_for

ARROW = "→"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("try", help="dry-run messages through a channel's steps: each step's "
                                   "effect and the outcome; nothing stored or sent",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("channel")
    p.add_argument("files", nargs="+", metavar="FILE", help="message files; - for stdin")
    p.add_argument("--config", default="channels.toml")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_try)


class Usage(Exception):
    """A problem with what was asked: the lines to print, exit status 2."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def channel_of(config: Any, path: str, name: str) -> Any:
    """The channel *name* of *config*; raises :class:`Usage` naming the known ones."""
    for ch in config.channel:
        if ch.name == name:
            return ch
    known = ", ".join(ch.name for ch in config.channel) or "none"
    raise Usage([ConfigProblem(path, 0, "channel", f"no channel named {name!r} (known: {known})")])


def read_messages(files: list[str]) -> list[tuple[str, int, bytes]]:
    """(file, number in the file, message) for every message; raises :class:`Usage` for a
    file that cannot be read or holds no message."""
    out, problems = [], []
    for name in files:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            problems.append(ConfigProblem(name, 0, "(file)", exc.strerror or str(exc)))
            continue
        found = [m for m in split_messages(data) if m.strip()]
        if not found:
            problems.append(ConfigProblem(name, 0, "(file)", "holds no message"))
        out += [(name, i, m) for i, m in enumerate(found, start=1)]
    if problems:
        raise Usage(problems)
    return out


def _quote(value: Any) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=False)


def change_lines(changes: list[dict[str, Any]], indent: str) -> list[str]:
    """One line per change: ``PID-5.1: "DOE" → "SMITH"``, ``+ ZDS: "ZDS|..."``, ``- NTE: ...``,
    ``~ NTE[1]: after OBR → after OBX[8]`` for a segment moved."""
    out = []
    for c in changes:
        if c["kind"] == "segment added":
            out.append(f"{indent}+ {c['path']}: {_quote(c['after'])}")
        elif c["kind"] == "segment removed":
            out.append(f"{indent}- {c['path']}: {_quote(c['before'])}")
        elif c["kind"] == "segment moved":
            out.append(f"{indent}~ {c['path']}: {c['before']} {ARROW} {c['after']}")
        else:
            out.append(f"{indent}{c['path']}: {_quote(c['before'])} {ARROW} {_quote(c['after'])}")
    return out


def _text_block(text: str, indent: str) -> list[str]:
    return [indent + line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def _outcome_line(body: dict[str, Any]) -> str:
    status, error = body["status"], body["error"]
    if status == "REFUSED":
        return f"outcome: REFUSED at intake (the sender gets AR): {error}"
    if status == "ERROR":
        failed = next((s for s in body["steps"] if s["result"] == "error"), None)
        where = f" at {failed['scope']} {failed['name']}" if failed else ""
        return f"outcome: ERROR{where}: {error}"
    if status == "FILTERED":
        return f"outcome: FILTERED ({error})"
    dests = len(body["deliveries"])
    return f"outcome: {status}, {dests} destination(s)" if dests else f"outcome: {status}, " \
        "no destination"


def text_report(file: str, number: int, body: dict[str, Any]) -> list[str]:
    """One message's dry run as the terminal shows it."""
    head = f"== {file} #{number}: {body['message_type'] or '?'}"
    lines = [head + (f" control id {body['control_id']}" if body["control_id"] else "")]
    for s in body["steps"]:
        reason = f": {s['reason']}" if s["reason"] else ""
        lines.append(f"  [{s['scope']}] {s['name']}: {s['result']}{reason}")
        lines += change_lines(s["changes"], "      ")
    lines.append("  " + _outcome_line(body))
    for d in body["deliveries"]:
        what = "the message as received" if d["raw"] else "payload"
        lines.append(f"  {ARROW} {d['destination']} ({what}):")
        lines += _text_block(d["payload"]["text"], "      ")
    for layer in body["layers"]:
        lines.append(f"  layer {layer['name']}:")
        lines += _text_block(_pretty(layer["text"]), "      ")
    return lines


def _pretty(text: str) -> str:
    """A JSON layer one value a line (``orders[0].accession: "ACC1"``); other text as is."""
    try:
        flat = flat_json(json.loads(text))
    except ValueError:
        return text
    return "\n".join(f"{key}: {json.dumps(value, ensure_ascii=False)}"
                     for key, value in flat.items())


def _load(args: argparse.Namespace) -> tuple[Any, Any, list[tuple[str, int, bytes]]]:
    try:
        config = load_config(args.config, check_files=False)
    except ConfigErrors as exc:
        raise Usage(exc.problems) from None
    return config, channel_of(config, args.config, args.channel), read_messages(args.files)


def cmd_try(args: argparse.Namespace) -> int:
    try:
        config, channel, messages = _load(args)
    except Usage as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    processor = runner_for(channel, config)
    results: list[tuple[str, int, Tried]] = [
        (file, n, try_message(channel, config, raw, i, processor))
        for i, (file, n, raw) in enumerate(messages, start=1)]
    bodies = [(file, n, report(tried)) for file, n, tried in results]
    failed = sum(1 for _, _, tried in results if tried.failed)
    if args.json:
        print(json.dumps({"channel": channel.name, "errors": failed, "messages": [
            {"file": file, "number": n, **body} for file, n, body in bodies]},
            ensure_ascii=False, indent=1))
    else:
        for file, n, body in bodies:
            print("\n".join(text_report(file, n, body)))
        print(f"{len(bodies)} message(s) tried on {channel.name}: {failed} in ERROR; "
              "nothing stored or sent")
    return 1 if failed else 0
