"""``radbridge messages``: list, search, show, reprocess and prune stored messages.

Works on the store named in channels.toml, beside a running engine or not
(a running engine hears of reprocessed messages through ``engine.store.signals``
within ``[engine] signal_poll_secs``). ``vacuum``
rebuilds a SQLite file so that pruning can shrink it: run that one with the
engine stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.cli.args import MAX_ID, config_after_action, integer, iso_time, number
from engine.config.schema import load_config
from engine.store.archive import ArchiveError
from engine.store.base import MessageQuery, Store, open_store
from engine.store.protocols import MessageDesk, RetentionWork
from mappings.hl7v2.text import decode


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("messages", help="list, show and reprocess stored messages")
    p.add_argument("--config", default="channels.toml")
    msub = p.add_subparsers(dest="action", required=True)
    ls = msub.add_parser("list", help="search messages (newest first)")
    _filters(ls)
    ls.set_defaults(func=cmd_list)
    show = msub.add_parser("show", help="one message with all its content layers")
    show.add_argument("id", type=integer())
    show.set_defaults(func=cmd_show)
    rp = msub.add_parser("reprocess", help="re-run messages through their channel")
    rp.add_argument("ids", type=integer(), nargs="*")
    _filters(rp)
    rp.set_defaults(func=cmd_reprocess)
    pr = msub.add_parser("prune", help="delete final messages older than N days (unfinished "
                                       "ones stay), archiving them first if asked")
    pr.add_argument("--older-than-days", type=number(above=True), required=True, metavar="N")
    pr.add_argument("--archive", metavar="DIR", help="write them to a gzip JSON-lines file here "
                    "first (default: [engine] message_archive_dir)")
    pr.add_argument("--no-archive", action="store_true",
                    help="do not archive, even if message_archive_dir is set")
    pr.set_defaults(func=cmd_prune)
    vac = msub.add_parser("vacuum", help="SQLite: rebuild the file so that pruning shrinks it "
                                         "(engine stopped)")
    vac.set_defaults(func=cmd_vacuum)
    config_after_action(msub)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel")
    p.add_argument("--status")
    p.add_argument("--type", dest="message_type", help="e.g. ORM^O01")
    p.add_argument("--control-id")
    p.add_argument("--since", type=iso_time, help="ISO date or datetime (UTC), or epoch secs")
    p.add_argument("--until", type=iso_time, help="ISO date or datetime (UTC), or epoch secs")
    p.add_argument("--limit", type=integer(1, MAX_ID), default=50)


def _query(args: argparse.Namespace) -> MessageQuery:
    return MessageQuery(channel=args.channel, status=args.status,
                        message_type=args.message_type, control_id=args.control_id,
                        since=args.since, until=args.until, limit=args.limit)


async def _with_store(args: argparse.Namespace, fn: Any) -> int:
    store = open_store(load_config(args.config).store.url)
    await store.open()
    try:
        return int(await fn(store))
    finally:
        await store.close()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def cmd_list(args: argparse.Namespace) -> int:
    async def run(store: MessageDesk) -> int:
        rows = await store.query_messages(_query(args))
        print(f"{'ID':>8}  {'RECEIVED':19}  {'CHANNEL':16} {'STATUS':11} {'TYPE':9} CONTROL ID")
        for m in rows:
            dup = " (duplicate)" if m.duplicate else ""
            print(f"{m.id:>8}  {_when(m.received_at)}  {m.channel:16} {m.status:11} "
                  f"{m.message_type or '-':9} {m.control_id or '-'}{dup}")
        return 0

    return asyncio.run(_with_store(args, run))


def _layer(name: str, data: bytes) -> str:
    return f"--- {name} ---\n" + decode(data).replace("\r", "\n").rstrip() + "\n"


def cmd_show(args: argparse.Namespace) -> int:
    async def run(store: MessageDesk) -> int:
        found = await store.get_message(args.id)
        if found is None:
            print(f"radbridge messages: no message {args.id}", file=sys.stderr)
            return 1
        m, deliveries = found
        print(f"message {m.id}  channel {m.channel}  status {m.status}  type "
              f"{m.message_type}  control id {m.control_id}  received {_when(m.received_at)}")
        if m.error:
            print(f"error: {m.error}")
        print(_layer("raw", m.raw), end="")
        for name, data in m.layers.items():
            print(_layer(name, data), end="")
        for d in deliveries:
            print(f"--- delivery {d.id} to {d.destination}: {d.status}, {d.attempts} attempt(s)"
                  f"{', ' + d.error if d.error else ''} ---")
            print(_layer("sent", d.payload), end="")
            if d.response is not None:
                print(_layer("response", d.response), end="")
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_reprocess(args: argparse.Namespace) -> int:
    async def run(store: MessageDesk) -> int:
        ids = list(args.ids)
        if not ids:
            if not any((args.channel, args.status, args.message_type, args.control_id,
                        args.since, args.until)):
                print("radbridge messages reprocess: give ids or at least one filter",
                      file=sys.stderr)
                return 2
            ids = [m.id for m in await store.query_messages(_query(args))]
        n = await store.reprocess(ids, announce=True)  # a running engine picks them up
        print(f"reprocessing {n} message(s)")
        return 0 if n == len(ids) else 1

    return asyncio.run(_with_store(args, run))


def cmd_prune(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    folder = args.archive or config.engine.message_archive_dir
    archive = None if args.no_archive or not folder else Path(folder)

    async def run(store: RetentionWork) -> int:
        try:
            result = await store.prune_messages(time.time() - args.older_than_days * 86400,
                                                archive)
        except ArchiveError as exc:
            print(f"radbridge messages prune: {exc}; nothing deleted", file=sys.stderr)
            return 1
        if result.skipped:
            print("another process is pruning this store now; nothing done (try again later)",
                  file=sys.stderr)
            return 3
        print(f"pruned {result.messages} message(s) in {result.batches} batch(es),"
              f" {result.bytes_freed} bytes freed")
        if result.days_dropped or result.days_kept:
            print(f"days dropped whole: {len(result.days_dropped)}, kept for unfinished"
                  f" messages: {len(result.days_kept)}")
        if result.archive is not None:
            print(f"archive: {result.archive}")
        if result.more:
            print("stopped at the per-run cap: run it again for the rest")
        if not result.file_shrinks:
            print("the database file does not shrink (auto_vacuum off): stop the engine and"
                  " run `radbridge messages vacuum` once")
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_vacuum(args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        vacuum = getattr(store, "vacuum", None)
        if vacuum is None:
            print("radbridge messages vacuum: only SQLite needs it (PostgreSQL frees days"
                  " by dropping partitions)")
            return 0
        before, after = await vacuum()
        print(f"rebuilt with incremental auto-vacuum: {before} -> {after} bytes")
        return 0

    return asyncio.run(_with_store(args, run))
