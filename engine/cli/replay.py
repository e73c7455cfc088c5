"""``radbridge replay --config CANDIDATE.toml [--channel C] [--since T] [--until T] --diff``.

Stored messages through a candidate configuration, compared with what the store says
happened (``engine.flow.replay``): nothing is stored or sent, and the store is opened for
reads only, so it runs beside the engine that owns it. The store is ``--store-url``, else the
``[store]`` of ``--store-config`` (the running engine's channels.toml), else the candidate's.

Prints a summary per channel (changed, unchanged, newly filtered, no longer filtered, newly
erroring, no longer erroring, skipped); with ``--diff``, each changed message first, with
its status before and after and, per destination, what it got against what it would get
now, field by field. ``--json`` prints the same as JSON. Exit status: 0, or 2 for a
configuration or usage problem (``file:line: key: message``), 1 when the store cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from engine.cli.args import MAX_ID, integer, iso_time
from engine.cli.tryrun import Usage, change_lines, channel_of
from engine.config.schema import load_config
from engine.errors import ConfigErrors, StoreError
from engine.flow.replay import CLASSES, UNCHANGED, Verdict, as_json, replay, summary
from engine.store.base import open_store


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("replay", help="stored messages through a candidate configuration, "
                                      "with a diff against what was sent; nothing sent",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="CANDIDATE.toml",
                   help="the configuration to try")
    p.add_argument("--store-url", help="the store to read (default: see below)")
    p.add_argument("--store-config", metavar="channels.toml",
                   help="read the store named by this (the running) configuration")
    p.add_argument("--channel", action="append", help="only this channel (repeatable); "
                   "default: every channel of the candidate that has a source")
    p.add_argument("--since", type=iso_time, help="ISO date or datetime (UTC), or epoch secs")
    p.add_argument("--until", type=iso_time, help="ISO date or datetime (UTC), or epoch secs")
    p.add_argument("--limit", type=integer(1, MAX_ID), default=10_000,
                   help="at most this many messages per channel (newest kept; default 10000)")
    p.add_argument("--diff", action="store_true", help="show each changed message's diff")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_replay)


def _setup(args: argparse.Namespace) -> tuple[Any, list[str], str]:
    """The candidate, the channels to replay and the store URL; raises :class:`Usage`."""
    try:
        config = load_config(args.config, check_files=False)
        url = args.store_url or (load_config(args.store_config, check_files=False).store.url
                                 if args.store_config else config.store.url)
    except ConfigErrors as exc:
        raise Usage(exc.problems) from None
    every: list[Any] = list(config.channel)  # ChannelConfig is built at run time
    names = args.channel or [ch.name for ch in every if ch.source is not None]
    for name in names:
        channel_of(config, args.config, name)
    return config, names, url


def _verdict_lines(v: Verdict) -> list[str]:
    (b_status, b_error), (a_status, a_error) = v.before, v.after
    lines = [f"== message {v.message_id} ({v.channel}): {v.klass}: {b_status} {'→'} {a_status}"]
    if b_error != a_error:
        lines.append(f"  error: {json.dumps(b_error)} {'→'} {json.dumps(a_error)}")
    for part in v.parts:
        if part.state == "new":
            lines.append(f"  [{part.name}] would now be sent (was not)")
        elif part.state == "gone":
            lines.append(f"  [{part.name}] would no longer be sent")
        elif part.state != UNCHANGED:
            lines.append(f"  [{part.name}] changed:")
            lines += change_lines(part.changes, "      ")
    return lines


def _table(rows: dict[str, dict[str, int]]) -> list[str]:
    width = max([len("channel"), *map(len, rows)])
    head = f"{'channel':<{width}}  " + "  ".join(f"{c:>{len(c)}}" for c in CLASSES)
    out = [head]
    for name, counts in rows.items():
        out.append(f"{name:<{width}}  " + "  ".join(f"{counts[c]:>{len(c)}}" for c in CLASSES))
    return out


async def _run(args: argparse.Namespace, config: Any, names: list[str], url: str
               ) -> list[Verdict]:
    store = open_store(url)
    await store.open_reads()
    try:
        return await replay(store, config, names, args.since, args.until, args.limit)
    finally:
        await store.close()


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        config, names, url = _setup(args)
    except Usage as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        verdicts = asyncio.run(_run(args, config, names, url))
    except (StoreError, ValueError) as exc:
        print(f"radbridge replay: cannot read the store: {exc}", file=sys.stderr)
        return 1
    changed = [v for v in verdicts if v.klass not in (UNCHANGED, "skipped")]
    if args.json:
        body: dict[str, Any] = {"summary": summary(verdicts)}
        if args.diff:
            body["messages"] = [as_json(v) for v in changed]
        print(json.dumps(body, ensure_ascii=False, indent=1))
        return 0
    if args.diff:
        for v in changed:
            print("\n".join(_verdict_lines(v)))
    print("\n".join(_table(summary(verdicts))))
    print(f"{len(verdicts)} stored message(s) replayed through {args.config}; nothing stored "
          "or sent")
    return 0
