"""A finished case's report is built and sent as soon as it is stored, not on a rescan: the
engine hands the ``ai_results`` channel's ``ResultsIngest.submit`` to its result listeners,
and storing the report wakes the channel's pipeline. The pipelines' rescan is turned off
(an hour) here, so only that wake can move the report on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.flow import pipeline
from tests.conftest import wait_for
from tests.fixtures.peers import HL7Sink
from tests.integration.test_correlation import send_hl7
from tests.integration.test_inference import real_chest_cr
from tests.integration.test_results_flow import Webhook, results_config, routine_orm, start


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    webhook = Webhook()
    await webhook.start()
    yield webhook
    await webhook.stop()


async def test_a_stored_report_is_sent_at_once_with_the_pipeline_rescan_off(
    engine_factory: Any,
    db_url: str,
    tmp_path: Path,
    hook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "RESCAN_SECS", 3600.0)
    ehr, ris = HL7Sink(), HL7Sink()
    await ehr.start()
    await ris.start()
    try:
        engine, ingest = await start(
            engine_factory, results_config(db_url, tmp_path, ehr, ris, hook.url), tmp_path
        )
        results = engine.results_ingests["ai-results"]
        assert results.submit in engine.result_listeners
        await send_hl7(engine, routine_orm("O1", "ACC-PTX"))
        part10, _ = real_chest_cr("ACC-PTX")
        await ingest.ingest(part10)
        await wait_for(lambda: ehr.received and hook.received, timeout=90)
        assert results.stored == 1
        assert b"ORU^R01" in ehr.received[0]
    finally:
        await ehr.stop()
        await ris.stop()
