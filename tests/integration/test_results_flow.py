"""Results out, in one engine: a finished case becomes a stored AI report on the ai_results
channel, and its pipeline sends the ORU to a real MLLP listener, the order update to the
RIS, an alert to a webhook, and raises the case on the worklist. Shadow sends nothing.
A worker process runs the jobs of an engine that runs no model itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hl7
import pytest
from aiohttp import web
from pydicom.uid import generate_uid

from engine.flow.instances import InstanceIngest
from engine.flow.runtime import Engine
from engine.store.base import MessageQuery
from tests.conftest import REPO, wait_for
from tests.fixtures.peers import HL7Sink
from tests.fixtures.studies import make_instance
from tests.integration.test_correlation import send_hl7
from tests.integration.test_inference import real_chest_cr


def routine_orm(cid: str, accession: str, patient: str = "MRN0001") -> bytes:
    """An ORM^O01 for a chest radiograph at routine priority (ORC-7.6 / OBR-27.6 = R)."""
    from bench.hl7gen import orm_o01

    raw = orm_o01(cid, patient_id=patient, accession=accession).replace(b"^^S|", b"^^R|")
    return b"\r".join(ln for ln in raw.split(b"\r") if not ln.startswith(b"ZDS"))


class Webhook:
    """A real HTTP endpoint recording what is POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._post)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/alerts"

    async def _post(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    await hook.start()
    yield hook
    await hook.stop()


def results_config(db_url: str, tmp_path: Path, ehr: HL7Sink, ris: HL7Sink, hook_url: str,
                   mode: str = "second_reader", inference: str = "local") -> str:
    return f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{tmp_path}"
inference = "{inference}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
[[channel]]
name = "ai-results"
source = {{ type = "ai_results", order_updates_to = ["ris-updates"] }}
forward_to = ["ehr", "ris-updates", "alerts"]
[[channel]]
name = "ehr"
destination = {{ type = "mllp", endpoint = "{ehr.endpoint}" }}
[[channel]]
name = "ris-updates"
destination = {{ type = "mllp", endpoint = "{ris.endpoint}" }}
[[channel]]
name = "alerts"
destination = {{ type = "webhook", url = "{hook_url}" }}
{demo_model(mode)}"""


def demo_model(mode: str = "second_reader") -> str:
    """demo-cxr routed for chest radiographs, reporting a (DEMO) pneumothorax on every study
    (threshold 0, so flows are deterministic), and the rule that escalates it to STAT: the
    demo's findings are never critical by themselves."""
    return f"""
[[escalation]]
code = "36118008"
priority = "STAT"
[[route]]
name = "chest"
when = {{ modality = ["CR", "DX"] }}
models = ["demo-cxr"]
[[model]]
name = "demo-cxr"
version = "0.1.0"
format = "builtin"
batch_max = 1
max_wait_ms = 0
mode = "{mode}"
[[model.output.labels]]
code = "36118008"
display = "Pneumothorax"
system = "SCT"
threshold = 0.0
criticality = "critical"
"""


async def start(engine_factory: Any, text: str, tmp_path: Path
                ) -> tuple[Engine, InstanceIngest]:
    engine = await engine_factory(text)
    engine.assembler.sweep_secs = 0.05
    return engine, InstanceIngest("pacs", engine.store, tmp_path, quiet_secs=0.2)


async def results_messages(engine: Engine) -> list[Any]:
    return await engine.store.query_messages(MessageQuery(channel="ai-results"))


async def test_a_critical_finding_is_sent_everywhere_and_tops_the_worklist(
        engine_factory: Any, db_url: str, tmp_path: Path, webhook: Webhook) -> None:
    ehr, ris = HL7Sink(), HL7Sink()
    await ehr.start()
    await ris.start()
    try:
        engine, ingest = await start(engine_factory, results_config(
            db_url, tmp_path, ehr, ris, webhook.url), tmp_path)
        # An older routine case with no AI result, then the chest radiograph.
        await send_hl7(engine, routine_orm("O0", "ACC-OLD", "MRN0000"))
        await ingest.ingest(make_instance(generate_uid(), accession="ACC-OLD",
                                          patient_id="MRN0000", modality="MR",
                                          body_part="HEAD"))  # no route: no model applies
        await send_hl7(engine, routine_orm("O1", "ACC-PTX"))
        part10, uid = real_chest_cr("ACC-PTX")
        await ingest.ingest(part10)

        try:
            await wait_for(lambda: ehr.received and ris.received and webhook.received,
                           timeout=90)
        except AssertionError:
            msgs = await results_messages(engine)
            got = [await engine.store.get_message(m.id) for m in msgs]
            raise AssertionError(
                f"outputs missing (ehr {len(ehr.received)}, ris {len(ris.received)}, webhook "
                f"{len(webhook.received)}); results channel: {[(m.status, m.error) for m in msgs]}"
                f" deliveries: {[[(d.destination, d.status) for d in g[1]] for g in got if g]}"
                f" worklist: {await engine.store.list_worklist()}") from None
        oru = hl7.parse(ehr.received[0].decode("latin-1").replace("\n", "\r"))
        assert str(oru.segment("MSH")[9]).startswith("ORU^R01")
        assert str(oru.segment("OBR")[18]) == "ACC-PTX"
        assert str(oru.segment("OBR")[25]) == "P"
        assert "36118008" in str(ehr.received[0])
        update = ris.received[0].decode("latin-1")
        assert "ORC|XO|" in update
        (alert,) = webhook.received
        assert (alert["accession"], alert["priority"], alert["demo"]) == ("ACC-PTX", "STAT", True)

        (msg,) = await results_messages(engine)
        assert msg.message_type == "AI^RESULT"
        await wait_for(lambda: _all_sent(engine, msg.id))
        worklist = await engine.store.list_worklist()
        assert worklist[0].accession == "ACC-PTX" and worklist[0].priority == "STAT"
        assert worklist[0].order_priority == "ROUTINE" and "Pneumothorax" in (
            worklist[0].reason or "")
        cases = {c.study_uid: c.id for c in await engine.store.list_cases()}
        assert worklist[0].case_id == cases[uid]
    finally:
        await ehr.stop()
        await ris.stop()


async def _all_sent(engine: Engine, message_id: int) -> bool:
    got = await engine.store.get_message(message_id)
    assert got is not None
    _, deliveries = got
    return len(deliveries) == 3 and all(str(d.status) == "SENT" for d in deliveries)


async def test_shadow_mode_keeps_findings_and_sends_nothing(
        engine_factory: Any, db_url: str, tmp_path: Path, webhook: Webhook) -> None:
    ehr, ris = HL7Sink(), HL7Sink()
    await ehr.start()
    await ris.start()
    try:
        engine, ingest = await start(engine_factory, results_config(
            db_url, tmp_path, ehr, ris, webhook.url, mode="shadow"), tmp_path)
        await send_hl7(engine, routine_orm("O1", "ACC-SHADOW"))
        await ingest.ingest(real_chest_cr("ACC-SHADOW")[0])
        await wait_for(lambda: engine.store.list_findings(), timeout=90)
        await wait_for(lambda: _notified(engine), timeout=30)
        await asyncio.sleep(0.5)
        assert await results_messages(engine) == []
        assert (ehr.received, ris.received, webhook.received) == ([], [], [])
        (item,) = await engine.store.list_worklist()
        assert item.priority == "ROUTINE" and item.reason is None
    finally:
        await ehr.stop()
        await ris.stop()


async def _notified(engine: Engine) -> bool:
    return not await engine.store.unnotified_cases() and bool(
        await engine.store.list_jobs(state="done"))


async def test_a_worker_process_runs_the_jobs_of_an_engine_that_runs_no_model(
        engine_factory: Any, db_url: str, tmp_path: Path, webhook: Webhook,
        cli_env: dict[str, str]) -> None:
    ehr, ris = HL7Sink(), HL7Sink()
    await ehr.start()
    await ris.start()
    worker = None
    try:
        text = results_config(db_url, tmp_path, ehr, ris, webhook.url, inference="workers")
        engine, ingest = await start(engine_factory, text, tmp_path)
        await send_hl7(engine, routine_orm("O1", "ACC-WRK"))
        await ingest.ingest(real_chest_cr("ACC-WRK")[0])
        await wait_for(lambda: engine.store.list_jobs(state="queued"), timeout=30)
        await asyncio.sleep(0.5)
        assert await engine.store.list_jobs(state="done") == []  # the engine runs no model

        config = tmp_path / "channels.toml"
        config.write_text(text)
        argv = [sys.executable, "-m", "engine.cli", "worker", str(config), "--log-level",
                "WARNING"]
        # A real second process, polled below.
        worker = subprocess.Popen(argv, cwd=REPO, env=cli_env,  # noqa: ASYNC220
                                  stdout=subprocess.PIPE, text=True)
        await wait_for(lambda: ehr.received, timeout=120)
        assert "ACC-WRK" in ehr.received[0].decode("latin-1")
        (job,) = await engine.store.list_jobs(state="done")
        assert job.model == "demo-cxr"
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
            if worker.stdout is not None:
                worker.stdout.close()
        await ehr.stop()
        await ris.stop()
