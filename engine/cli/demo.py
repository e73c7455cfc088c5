"""``radbridge demo [channels.toml]``: push a DEMO order and chest radiograph through the
running engine and print what became of them.

It talks to the engine as a RIS and a modality would: the order (ORM^O01) over MLLP to
the first ``process = "orders"`` channel, the image by C-STORE to the first ``dicom``
channel, both from ``mappings.demo`` (synthetic, labelled DEMO, nothing downloaded).
Then it declares the study complete in the store, as ``radbridge studies complete``
does (the running engine hears it through ``engine.store.signals``), so nobody waits
for the quiet period, and reads the store until the case's inference and results are
final, for at most ``--timeout`` seconds: the ACK, the case, each model's run and
findings (shadow-mode findings are shown and marked: they are never sent), the worklist
entry, each result written, and the dashboard's address.

Exit status: 0 when the case went all the way through, 1 when something did not happen
in time or the engine did not answer (the reason is printed), 2 for a configuration
without the channels the demo needs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engine.cli.args import number
from engine.config.base import parse_hostport
from engine.config.schema import Config, load_config
from engine.errors import ConfigErrors, DeliveryError
from engine.results.model import report_id_for
from engine.store.base import MessageQuery, Store, open_store
from engine.store.clinical import CaseRow
from engine.store.inference import JobRow, StoredFinding

T = TypeVar("T")
POSITIVE_ACKS = ("AA", "CA")


class DemoFailed(Exception):
    """A step did not happen (the message says which, and what to check)."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="push a synthetic DEMO order and chest radiograph through "
        "the running engine and show what happened",
    )
    p.add_argument("config", nargs="?", default="channels.toml")
    p.add_argument(
        "--timeout",
        type=number(1.0, 3600.0),
        default=60.0,
        help="seconds to wait for the case's inference and results (default 60)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        plan = DemoPlan.from_config(config)
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except DemoFailed as exc:
        print(f"radbridge demo: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(Demo(config, plan, args.timeout).run())
    except DemoFailed as exc:
        print(f"radbridge demo: {exc}", file=sys.stderr)
        return 1


def _local(listen: str) -> tuple[str, int]:
    """Where to reach a listener from this machine (a wildcard address means loopback)."""
    host, port = parse_hostport(listen, default_host="127.0.0.1")
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), port


class DemoPlan:
    """Which channels of the configuration the demo uses."""

    def __init__(self, orders: Any, pacs: Any, results: list[Any], dashboard: str | None) -> None:
        self.orders, self.pacs, self.results, self.dashboard = orders, pacs, results, dashboard

    @classmethod
    def from_config(cls, config: Config) -> DemoPlan:
        channels: list[Any] = list(config.channel)  # ChannelConfig is built at run time
        live = [c for c in channels if c.enabled and c.source is not None]
        orders = next(
            (
                c
                for c in live
                if c.source.type == "mllp"
                and c.process == "orders"
                and (not c.accept or "ORM^O01" in c.accept)
            ),
            None,
        )
        pacs = next((c for c in live if c.source.type == "dicom"), None)
        if orders is None or pacs is None:
            raise DemoFailed(
                'the configuration needs an MLLP channel with process = "orders"'
                " that accepts ORM^O01 and a dicom channel (see channels.toml)"
            )
        results = [c for c in live if c.source.type == "ai_results"]
        admin = config.admin
        dashboard = None
        if admin is not None and admin.enabled:
            host, port = _local(admin.listen)
            dashboard = f"{'https' if admin.tls else 'http'}://{host}:{port}/"
        return cls(orders, pacs, results, dashboard)


def say(step: str, text: str) -> None:
    print(f"  {step:10}{text}", flush=True)


class Demo:
    """One demo run: push, complete, then report what the store shows."""

    def __init__(self, config: Config, plan: DemoPlan, timeout: float) -> None:
        from mappings.demo import DemoIds

        self.config, self.plan = config, plan
        self.deadline = time.monotonic() + timeout
        self.ids = DemoIds.new()
        self.store: Store = open_store(config.store.url)
        self.message: Any = None  # the order, once stored

    async def run(self) -> int:
        print(
            f"radbridge demo: a synthetic DEMO order and chest radiograph through the running "
            f"engine (patient {self.ids.patient_id}, accession {self.ids.accession})"
        )
        await self.store.open()
        try:
            await self.send_order()
            await self.send_study()
            case = await self.complete()
            done = await self.report(case)
        finally:
            await self.store.close()
        if self.plan.dashboard:
            base = self.plan.dashboard
            say("dashboard", f"{base}#/cases/{case.id}  the case: timeline and findings")
            say("", f"{base}#/messages/{self.message.id}  the order message")
            say("", f"{base}#/worklist  the reading worklist")
        return 0 if done else 1

    async def until(self, what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
        """Poll *probe* until it returns something, or fail naming *what* did not happen."""
        while True:
            value = await probe()
            if value:
                return value
            if time.monotonic() > self.deadline:
                raise DemoFailed(f"timed out waiting for {what}")
            await asyncio.sleep(0.25)

    async def send_order(self) -> None:
        from channels.mllp.client import MLLPClient
        from mappings.demo import demo_order
        from mappings.hl7v2.ack import read_ack

        ch = self.plan.orders
        host, port = _local(ch.source.listen)
        client = MLLPClient(host, port, ack_timeout=30)
        try:
            code, _, reason = read_ack(await client.send(demo_order(self.ids)))
        except DeliveryError as exc:
            raise DemoFailed(
                f"no answer from {ch.name} at {host}:{port} ({exc}); is the engine "
                "running (./dev run)?"
            ) from None
        finally:
            await client.close()
        say(
            "order",
            f"ORM^O01 {self.ids.control_id} to {ch.name} ({host}:{port}): ACK {code}"
            + (f" {reason}" if reason else ""),
        )
        if code not in POSITIVE_ACKS:
            raise DemoFailed(f"the order was not accepted ({code})")
        await self.until("the order to be mapped", self._order_id)
        query = MessageQuery(channel=ch.name, control_id=self.ids.control_id, limit=1)
        (self.message,) = await self.store.query_messages(query)
        say("", f"stored as message {self.message.id}, {self.message.status}")

    async def _order_id(self) -> int | None:
        orders = await self.store.list_orders(200)
        return next((o.id for o in orders if o.accession == self.ids.accession), None)

    async def send_study(self) -> None:
        from channels.dicom.scu import StoreSCUConfig, StoreSCUDestination
        from mappings.demo import demo_chest_radiograph

        ch = self.plan.pacs
        host, port = _local(ch.source.listen)
        scu = StoreSCUDestination(
            "demo",
            StoreSCUConfig.model_validate(
                {
                    "type": "dicom",
                    "endpoint": f"{host}:{port}",
                    "called_ae": ch.source.ae_title,
                    "calling_ae": "RADBRIDGE_DEMO",
                    "keep_open_secs": 0,
                    "timeout_secs": 30,
                }
            ),
        )
        try:
            status = (await scu.send(demo_chest_radiograph(self.ids))).decode()
        except DeliveryError as exc:
            raise DemoFailed(f"C-STORE to {ch.name} at {host}:{port} failed: {exc}") from None
        finally:
            await scu.close()
        say(
            "study",
            f"1 CR CHEST image (DEMO) to {ch.name} ({ch.source.ae_title}@{host}:{port}): {status}",
        )

    async def complete(self) -> CaseRow:
        uid = self.ids.study_uid
        await self.until("the study to be stored", lambda: self.store.get_study(uid))
        cases = await self.store.complete_study(uid, announce=True)
        say(
            "complete",
            f"study {uid} declared complete (no {self.plan.pacs.study_quiet_secs:g} s"
            " quiet period to wait)",
        )
        case = cases[0] if cases else await self.until("the study to meet its order", self._case)
        say(
            "case",
            f"{case.id} {case.state}: accession {case.accession}, patient "
            f"{case.patient_id}, {case.modality} {case.body_part}",
        )
        return case

    async def _case(self) -> CaseRow | None:
        cases = await self.store.list_cases(None, 200)
        return next((c for c in cases if c.study_uid == self.ids.study_uid), None)

    async def report(self, case: CaseRow) -> bool:
        """Print inference, findings, worklist and results; False if some never came."""
        try:
            jobs = await self.until(
                "inference (are the models still loading?)", lambda: self._final_jobs(case.id)
            )
            self.print_inference(jobs, await self.store.list_findings(case.id, 1000))
            if self.sendable(jobs):
                await self.print_results(case)
            else:
                say("results", "none: no model outside shadow mode finished, nothing is sent")
            await self.print_worklist(case.id)
        except DemoFailed as exc:
            say("waiting", f"{exc}: see `radbridge jobs` and the engine's log")
            return False
        return True

    async def _final_jobs(self, case_id: int) -> list[JobRow] | None:
        jobs = await self.store.list_jobs(case_id, None, 100)
        return jobs if jobs and all(j.state.final for j in jobs) else None

    def sendable(self, jobs: list[JobRow]) -> bool:
        """Whether the case makes an AI report (``ResultsIngest.submit``'s rule)."""
        modes = {m.name: m.mode for m in self.config.model}
        return any(
            j.model is not None and j.state == "done" and modes.get(j.model) != "shadow"
            for j in jobs
        )

    def print_inference(self, jobs: list[JobRow], findings: list[StoredFinding]) -> None:
        modes = {m.name: m.mode for m in self.config.model}
        for job in sorted(jobs, key=lambda j: j.id):
            if job.model is None:
                say("inference", f"no model applies ({job.error})")
                continue
            mine = [f for f in findings if f.finding.model_name == job.model]
            shadow = modes.get(job.model) == "shadow"
            note = " (shadow mode: stored and shown, never sent)" if shadow else ""
            say(
                "inference",
                f"{job.model}: {job.state}, {len(mine)} finding(s){note}"
                + (f": {job.error}" if job.error else ""),
            )
            for s in mine:
                f = s.finding
                prob = f" p={f.probability:.2f}" if f.probability is not None else ""
                marks = [
                    m
                    for m, on in (
                        ("DEMO", f.demo),
                        ("shadow", f.mode == "shadow"),
                        (f.criticality, f.criticality != "none"),
                    )
                    if on
                ]
                say(
                    "finding",
                    f"{f.model_name} {f.code} {f.display}{prob}"
                    + (f" [{', '.join(marks)}]" if marks else ""),
                )

    async def print_worklist(self, case_id: int) -> None:
        async def entry() -> Any:
            rows = await self.store.list_worklist(500, include_read=True)
            return next((r for r in rows if r.case_id == case_id), None)

        row = await self.until("the worklist entry", entry)
        why = row.reason or "not raised: no sendable finding met an escalation rule"
        say("worklist", f"case {case_id}: {row.priority} (ordered {row.order_priority}); {why}")

    async def print_results(self, case: CaseRow) -> None:
        if not self.plan.results:
            say("results", "no ai_results channel in this configuration: nothing is sent")
            return
        for ch in self.plan.results:
            report = await self.until(
                f"the AI report on {ch.name}",
                functools.partial(self._report_message, ch.name, case),
            )
            message, deliveries = await self.until(
                f"{ch.name}'s results to be written",
                functools.partial(self._final_deliveries, report.id),
            )
            say("result", f"AI report, message {message.id} on {ch.name}: {message.status}")
            for d in deliveries:
                answer = (d.response or b"").decode(errors="replace") or d.error or ""
                say("", f"-> {d.destination}: {d.status} {answer}".rstrip())

    async def _report_message(self, channel: str, case: CaseRow) -> Any:
        query = MessageQuery(
            channel=channel, control_id=report_id_for(case.id, case.revision), limit=1
        )
        found = await self.store.query_messages(query)
        return found[0] if found else None

    async def _final_deliveries(self, message_id: int) -> tuple[Any, list[Any]] | None:
        found = await self.store.get_message(message_id)
        if found is None or not found[0].status.final:
            return None
        return found if all(d.status != "QUEUED" for d in found[1]) else None
