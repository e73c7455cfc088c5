"""``radbridge cases | studies | orders | unmatched``: the clinical side from the CLI."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime
from typing import Any

from engine.cli.args import integer, number
from engine.config.schema import load_config
from engine.store.base import open_store
from engine.store.clinical import CaseRow, OrderRow, StudyRow
from engine.store.protocols import ClinicalDesk
from engine.store.results import WorklistRow


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cases = sub.add_parser("cases", help="orders joined with their complete studies")
    _common(cases)
    cases.add_argument("--state", choices=["ready", "cancelled", "study_only"])
    cases.set_defaults(func=lambda a: _run(a, _list_cases))

    studies = sub.add_parser("studies", help="studies: list, complete now, proceed study-only")
    _common(studies)
    studies.add_argument("action", nargs="?", choices=["list", "complete", "proceed"],
                         default="list")
    studies.add_argument("uid", nargs="?", help="Study Instance UID (complete, proceed)")
    studies.add_argument("--state", choices=["receiving", "complete"])
    studies.set_defaults(func=lambda a: _run(a, _studies))

    orders = sub.add_parser("orders", help="orders received from the RIS")
    _common(orders)
    orders.set_defaults(func=lambda a: _run(a, _list_orders))

    unmatched = sub.add_parser("unmatched", help="orders and studies still waiting for a match")
    _common(unmatched)
    unmatched.add_argument("--older-than-secs", type=number(),
                           help="default: engine.unmatched_after_secs")
    unmatched.set_defaults(func=lambda a: _run(a, _unmatched))

    worklist = sub.add_parser("worklist", help="the reading worklist: by priority, then age")
    _common(worklist)
    worklist.add_argument("--all", action="store_true", help="also cases already read")
    worklist.set_defaults(func=lambda a: _run(a, _worklist))

    agreement = sub.add_parser("agreement", help="AI findings confirmed, refuted and missed "
                                                 "per model version (radiologists, reports)")
    _common(agreement)
    agreement.set_defaults(func=lambda a: _run(a, _agreement))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="channels.toml")
    p.add_argument("--limit", type=integer(), default=50)


def _run(args: argparse.Namespace, fn: Any) -> int:
    async def main() -> int:
        config = load_config(args.config)
        store = open_store(config.store.url)
        await store.open()
        try:
            return int(await fn(store, args, config))
        finally:
            await store.close()

    return asyncio.run(main())


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds") if ts else "-"


def print_cases(rows: list[CaseRow]) -> None:
    print(f"{'CASE':>6}  {'STATE':10} {'ACCESSION':14} {'PATIENT':14} {'MOD':4} {'PRI':3} "
          f"{'REV':>3}  STUDY")
    for c in rows:
        print(f"{c.id:>6}  {c.state:10} {c.accession or '-':14} {c.patient_id or '-':14} "
              f"{c.modality or '-':4} {c.priority or '-':3} {c.revision:>3}  {c.study_uid}")


def print_studies(rows: list[StudyRow]) -> None:
    print(f"{'STATE':10} {'ACCESSION':14} {'PATIENT':14} {'MOD':4} {'SER':>3} {'INST':>5} "
          f"{'LAST INSTANCE':19}  STUDY")
    for s in rows:
        print(f"{s.state:10} {s.accession or '-':14} {s.patient_id or '-':14} "
              f"{s.modality or '-':4} {s.series_count:>3} {s.instance_count:>5} "
              f"{_when(s.last_at):19}  {s.uid}")


def print_orders(rows: list[OrderRow]) -> None:
    print(f"{'ID':>5}  {'CTL':3} {'STATUS':6} {'ACCESSION':14} {'PATIENT':14} {'MOD':4} "
          f"{'PRI':3} PROCEDURE")
    for o in rows:
        flag = " (cancelled)" if o.cancelled else ""
        print(f"{o.id:>5}  {o.control:3} {o.status or '-':6} {o.accession or '-':14} "
              f"{o.patient_id or '-':14} {o.modality or '-':4} {o.priority or '-':3} "
              f"{o.procedure_code or '-'} {o.procedure_text or ''}{flag}")


async def _list_cases(store: ClinicalDesk, args: argparse.Namespace, config: Any) -> int:
    print_cases(await store.list_cases(args.state, args.limit))
    return 0


async def _list_orders(store: ClinicalDesk, args: argparse.Namespace, config: Any) -> int:
    print_orders(await store.list_orders(args.limit))
    return 0


async def _studies(store: ClinicalDesk, args: argparse.Namespace, config: Any) -> int:
    if args.action == "list":
        print_studies(await store.list_studies(args.state, args.limit))
        return 0
    if not args.uid:
        print(f"radbridge studies {args.action}: give a Study Instance UID")
        return 2
    if args.action == "complete":
        cases = await store.complete_study(args.uid, announce=True)  # a running engine acts
        study = await store.get_study(args.uid)
        if study is None:
            print(f"no study {args.uid}")
            return 1
        print(f"study {args.uid} is {study.state}; {len(cases)} new case(s)")
        print_cases(cases)
        return 0
    case = await store.proceed_study_only(args.uid, announce=True)
    if case is None:
        print(f"study {args.uid} is not complete, unknown, or already has a case")
        return 1
    print_cases([case])
    return 0


async def _unmatched(store: ClinicalDesk, args: argparse.Namespace, config: Any) -> int:
    age = args.older_than_secs
    if age is None:
        age = config.engine.unmatched_after_secs
    orders, studies = await store.unmatched(time.time() - age)
    print(f"orders without a study ({len(orders)}):")
    print_orders(orders)
    print(f"\ncomplete studies without an order ({len(studies)}):")
    print_studies(studies)
    return 0


def print_worklist(rows: list[WorklistRow]) -> None:
    print(f"{'CASE':>6}  {'PRIORITY':8} {'ORDERED':8} {'AGE':>8}  {'ACCESSION':14} "
          f"{'PATIENT':14} {'MOD':4} REASON / AI FLAGS")
    now = time.time()
    for r in rows:
        flags = ", ".join(f"{f['display']} {f['probability']:.2f}" if f.get("probability")
                          is not None else str(f["display"]) for f in r.ai_flags)
        age = _age(now - r.created_at)
        print(f"{r.case_id:>6}  {r.priority:8} {r.order_priority:8} {age:>8}  "
              f"{r.accession or '-':14} {r.patient_id or '-':14} {r.modality or '-':4} "
              f"{r.reason or (flags and 'AI: ' + flags) or '-'}")


def _age(secs: float) -> str:
    if secs < 3600:
        return f"{int(secs // 60)}m"
    if secs < 86400:
        return f"{int(secs // 3600)}h{int(secs % 3600 // 60):02d}m"
    return f"{int(secs // 86400)}d{int(secs % 86400 // 3600):02d}h"


async def _worklist(store: ClinicalDesk, args: argparse.Namespace, config: Any) -> int:
    print_worklist(await store.list_worklist(args.limit, include_read=args.all))
    return 0


async def _agreement(store: ClinicalDesk, args: argparse.Namespace, config: Any) -> int:
    rows = await store.agreement()
    print(f"{'MODEL':20} {'VERSION':10} {'CONFIRMED':>9} {'REFUTED':>8} {'MODIFIED':>8} "
          f"{'MISSED':>7} {'AGREEMENT':>9}")
    for r in rows:
        rate = f"{r.agreement:.1%}" if r.agreement is not None else "-"
        print(f"{r.model:20} {r.version:10} {r.accepted:>9} {r.rejected:>8} {r.modified:>8} "
              f"{r.missed:>7} {rate:>9}")
    return 0
