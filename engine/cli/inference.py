"""``radbridge audit | findings | jobs | models``: inference from the command line.

::

    radbridge audit [--case N] [--model NAME]   every inference attempt: model, version,
                                                checksum, device, batch, timings, status
    radbridge findings [--case N]               findings per case (DEMO and shadow marked)
    radbridge jobs [--case N] [--state S]       the durable inference queue, "no model" cases
    radbridge models                            model loads: checksum, device, failures
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from engine.cli.args import integer
from engine.cli.clinical import _run
from engine.store.inference import AuditEntry, JobRow, StoredFinding
from engine.store.protocols import InferenceRecords


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="inference audit: what ran, where, how long, outputs")
    _common(audit)
    audit.add_argument("--case", type=integer())
    audit.add_argument("--model")
    audit.add_argument("--outputs", action="store_true", help="also print each row's outputs")
    audit.set_defaults(func=lambda a: _run(a, _audit))

    findings = sub.add_parser("findings", help="findings of inference, per case")
    _common(findings)
    findings.add_argument("--case", type=integer())
    findings.set_defaults(func=lambda a: _run(a, _findings))

    jobs = sub.add_parser("jobs", help="inference jobs (the durable queue)")
    _common(jobs)
    jobs.add_argument("--case", type=integer())
    jobs.add_argument("--state", choices=["queued", "running", "done", "error", "no_model"])
    jobs.set_defaults(func=lambda a: _run(a, _jobs))

    models = sub.add_parser("models", help="model loads with their checksums")
    _common(models)
    models.set_defaults(func=lambda a: _run(a, _models))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="channels.toml")
    p.add_argument("--limit", type=integer(), default=50)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def print_audit(rows: list[AuditEntry], outputs: bool = False) -> None:
    print(f"{'ID':>5} {'CASE':>5} {'MODEL':14} {'VERSION':9} {'SHA256':12} {'DEVICE':7} "
          f"{'TRY':>3} {'STATUS':7} {'BATCH':>5} {'QUEUE':>7} {'PREP':>7} {'FWD':>7} "
          f"{'TOTAL':>8}  STUDY")
    for a in rows:
        print(f"{a.id:>5} {a.case_id:>5} {a.model:14} {a.version:9} {a.checksum[:12]:12} "
              f"{a.device:7} {a.attempt:>3} {a.status:7} {a.batch_size:>5} {_ms(a.queue_ms):>7} "
              f"{_ms(a.preprocess_ms):>7} {_ms(a.forward_ms):>7} {_ms(a.total_ms):>8}  "
              f"{a.study_uid}")
        if a.error:
            print(f"{'':12}error: {a.error}")
        if outputs:
            print(f"{'':12}outputs: {json.dumps(json.loads(a.outputs), sort_keys=True)}")


def print_findings(rows: list[StoredFinding], jobs: list[JobRow]) -> None:
    print(f"{'CASE':>5} {'MODEL':14} {'SYSTEM':11} {'CODE':18} {'PROB':>6} {'CRIT':8} "
          f"{'MODE':13} DISPLAY")
    for s in rows:
        f = s.finding
        prob = f"{f.probability:.3f}" if f.probability is not None else "-"
        print(f"{s.case_id:>5} {f.model_name:14} {f.coding_system:11} {f.code:18} {prob:>6} "
              f"{f.criticality:8} {f.mode:13} {f.display}")
        if f.detail:
            print(f"{'':6}{f.detail}")
    found = {(s.case_id, s.finding.model_name) for s in rows}
    for j in jobs:
        if j.state == "no_model":
            print(f"{j.case_id:>5} (none)  {j.error or 'no model applies'}")
        elif j.state == "error":
            print(f"{j.case_id:>5} {j.model or '-':14} failed: {j.error}")
        elif j.state == "done" and (j.case_id, j.model) not in found:
            print(f"{j.case_id:>5} {j.model or '-':14} no findings")


def print_jobs(rows: list[JobRow]) -> None:
    print(f"{'JOB':>5} {'CASE':>5} {'MODEL':14} {'STATE':9} {'LANE':7} {'TRIES':>5} "
          f"{'UPDATED':19}  ERROR")
    for j in rows:
        lane = "stat" if j.lane == 0 else "routine"
        print(f"{j.id:>5} {j.case_id:>5} {j.model or '(none)':14} {j.state:9} {lane:7} "
              f"{j.attempts:>5} {_when(j.updated_at):19}  {j.error or ''}")


async def _audit(store: InferenceRecords, args: argparse.Namespace, config: Any) -> int:
    print_audit(await store.list_audit(args.case, args.model, args.limit), args.outputs)
    return 0


async def _findings(store: InferenceRecords, args: argparse.Namespace, config: Any) -> int:
    rows = await store.list_findings(args.case, args.limit)
    jobs = await store.list_jobs(args.case, None, args.limit)
    print_findings(rows, list(reversed(jobs)))
    return 0


async def _jobs(store: InferenceRecords, args: argparse.Namespace, config: Any) -> int:
    print_jobs(await store.list_jobs(args.case, args.state, args.limit))
    return 0


async def _models(store: InferenceRecords, args: argparse.Namespace, config: Any) -> int:
    print(f"{'WHEN':19}  {'MODEL':14} {'VERSION':9} {'FORMAT':11} {'DEVICE':7} {'STATUS':7} "
          "SHA256 / ERROR")
    for m in await store.list_model_loads(args.limit):
        print(f"{_when(m.at):19}  {m.name:14} {m.version:9} {m.format:11} {m.device:7} "
              f"{m.status:7} {m.checksum or m.error}")
    return 0
