"""``radbridge deliveries``: see a destination's queue; skip, cancel or retry one delivery.

Works on the store named in channels.toml, beside a running engine: its worker
looks at a head it keeps retrying at least once a second, so a skip takes effect
within about a second, and the queue moves on. Every change is written to the
audit log (``[admin] audit_path``, default ``<data_dir>/audit.db``) first, with
the user (``--user``, default the login name) and the reason; if the entry cannot
be written, nothing is changed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.admin.audit import AuditLog
from engine.admin.auth import Principal
from engine.cli.args import config_after_action, integer
from engine.config.schema import Config, load_config
from engine.flow.delivery import clean_reason, operate
from engine.model import DeliveryStatus
from engine.store.base import open_store
from engine.store.deliveries import DeliveryInfo
from engine.store.protocols import DeliveryActions, DeliveryDesk

PROG = "radbridge deliveries"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("deliveries", help="a destination's queue: list; skip, cancel or retry "
                                          "one delivery (audited)")
    p.add_argument("--config", default="channels.toml")
    dsub = p.add_subparsers(dest="action", required=True)
    ls = dsub.add_parser("list", help="a destination's deliveries (QUEUED: the head first)")
    ls.add_argument("destination")
    ls.add_argument("--status", choices=[str(s) for s in DeliveryStatus], default="QUEUED")
    ls.add_argument("--limit", type=integer(1, 10_000), default=20)
    ls.set_defaults(func=cmd_list)
    for action, text in (("skip", "a queued delivery ends as ERROR (SKIPPED, who and why); "
                                  "its queue moves on"),
                         ("cancel", "a queued delivery is not sent (ERROR: CANCELLED, who "
                                    "and why)"),
                         ("retry", "a failed (ERROR) delivery is queued again, sent next")):
        a = dsub.add_parser(action, help=text)
        a.add_argument("id", type=integer(), help="the delivery id (see `list`)")
        a.add_argument("--reason", required=True, help="why: kept with the delivery and "
                                                       "in the audit log")
        a.add_argument("--user", default=None, help="who (default: your login name)")
        a.set_defaults(func=cmd_act)
    config_after_action(dsub)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid-{os.getuid()}"


def _audit_path(config: Config) -> Path:
    admin = config.admin
    if admin is not None and admin.audit_path:
        return Path(admin.audit_path)
    return Path(config.engine.data_dir) / "audit.db"


async def _with_store(config: Config, fn: Any) -> int:
    store = open_store(config.store.url)
    await store.open()
    try:
        return int(await fn(store))
    finally:
        await store.close()


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds") if ts else "-"


def print_deliveries(rows: list[DeliveryInfo]) -> None:
    print(f"{'ID':>8} {'MESSAGE':>8}  {'STATUS':7} {'TRIES':>5}  {'UPDATED':19}  ERROR")
    for d in rows:
        print(f"{d.id:>8} {d.message_id:>8}  {d.status:7} {d.attempts:>5}  "
              f"{_when(d.updated_at):19}  {d.error or ''}")


def cmd_list(args: argparse.Namespace) -> int:
    async def run(store: DeliveryDesk) -> int:
        print_deliveries(await store.list_deliveries(args.destination,
                                                     DeliveryStatus(args.status), args.limit))
        return 0

    return asyncio.run(_with_store(load_config(args.config), run))


def cmd_act(args: argparse.Namespace) -> int:
    try:
        reason = clean_reason(args.reason)
    except ValueError as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    user = args.user or _login()

    async def run(store: DeliveryActions) -> int:
        info = await store.get_delivery(args.id)
        if info is None:
            print(f"{PROG} {args.action}: no delivery {args.id}", file=sys.stderr)
            return 1
        if not await _audited(config, user, args.action, info, reason):
            return 1
        try:
            after = await operate(store, args.id, args.action, user, reason)
        except (LookupError, ValueError) as exc:
            print(f"{PROG} {args.action}: {exc.args[0]}", file=sys.stderr)
            return 1
        print_deliveries([after])
        return 0

    return asyncio.run(_with_store(config, run))


async def _audited(config: Config, user: str, action: str, info: DeliveryInfo,
                   reason: str) -> bool:
    """Write the audit entry first; False (and why, on stderr) when it cannot be written."""
    log = AuditLog(_audit_path(config))
    try:
        await log.open()
        await log.record(Principal(user, "cli", "cli"), f"delivery.{action}", str(info.id),
                         {"destination": info.destination, "message": info.message_id,
                          "reason": reason}, remote="cli")
    except Exception as exc:  # noqa: BLE001 (any failure: do not change what is unaudited)
        print(f"{PROG} {action}: the audit log {log.path} cannot be written "
              f"({type(exc).__name__}); nothing changed", file=sys.stderr)
        return False
    finally:
        await log.close()
    return True
