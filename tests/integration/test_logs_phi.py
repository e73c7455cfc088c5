"""Logs never carry PHI: an end-to-end run at DEBUG, every line scanned for the fixture
patients' names and identifiers (target: 0 hits)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from bench.hl7gen import _FAMILY, _GIVEN, orm_o01
from channels.mllp.client import MLLPClient
from engine.flow.instances import InstanceIngest
from tests.conftest import wait_for
from tests.fixtures.hostile_hl7 import CORPUS
from tests.fixtures.studies import make_instance

PATIENT_IDS = [f"PHI-MRN-{i:04d}" for i in range(12)]


async def test_an_end_to_end_run_logs_no_names_or_patient_ids(
        engine_factory: Any, db_url: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="radbridge")
    engine = await engine_factory(f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{tmp_path}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
""")
    engine.assembler.sweep_secs = 0.05
    client = MLLPClient(*engine.address("ris"))
    for i, pid in enumerate(PATIENT_IDS):
        await client.send(orm_o01(f"P{i}", patient_id=pid, accession=f"PACC{i}", seed=i))
    for _, payload, _, _ in CORPUS:  # refused messages are logged too
        await client.send(payload)
    await client.close()
    ingest = InstanceIngest("pacs", engine.store, tmp_path, quiet_secs=0.1)
    for i, pid in enumerate(PATIENT_IDS[:4]):
        await ingest.ingest(make_instance(generate_uid(), patient_id=pid, accession=f"PACC{i}"))
    await wait_for(lambda: _cases(engine, 4))

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert len(caplog.records) > 20  # the run really logged
    secrets = [*_FAMILY, *_GIVEN, *PATIENT_IDS, "MRN77", "DOE^JANE", "TEST^PATIENT"]
    hits = [s for s in secrets if s in text]
    assert hits == []


async def _cases(engine: Any, n: int) -> bool:
    return len(await engine.store.list_cases()) >= n
