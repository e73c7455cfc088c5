"""Study assembly's expected count, fed by what a source knows: the QIDO-RS poller hands each
instance the study's NumberOfStudyRelatedInstances (0020,1208) from a real Orthanc, so a
polled study completes once that many instances have arrived, long before its quiet period."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tests.fixtures.dicom import write_study
from tests.fixtures.orthanc import Orthanc
from tests.integration.test_dicomweb import poll_config, upload_study

HOUR = 3600


async def is_complete(engine: Any, uid: str) -> bool:
    row = await engine.store.get_study(uid)
    return row is not None and row.state == "complete"


async def test_a_polled_study_completes_on_its_qido_count_without_waiting_an_hour(
    engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc
) -> None:
    study = write_study(
        tmp_path / "q", [("CT", 2), ("CR", 1)], study_date=f"{dt.date.today():%Y%m%d}"
    )
    await upload_study(orthanc, study)
    text = poll_config(
        db_url, tmp_path / "data", orthanc.dicomweb, ', flavour = "qido", start_from = "beginning"'
    )
    engine = await engine_factory(
        text.replace('name = "poll"\n', f'name = "poll"\nstudy_quiet_secs = {HOUR}\n')
    )
    await wait_for(lambda: is_complete(engine, study.uid), timeout=60)
    row = await engine.store.get_study(study.uid)
    assert row is not None
    assert (row.instance_count, row.expected_count, row.series_count) == (3, 3, 2)


async def test_the_orthanc_change_feed_knows_no_count_and_leaves_the_quiet_period_to_decide(
    engine_factory: Any, db_url: str, tmp_path: Path, orthanc: Orthanc
) -> None:
    study = write_study(tmp_path / "o", [("CT", 2)])
    await upload_study(orthanc, study)
    text = poll_config(db_url, tmp_path / "data", orthanc.url, ', start_from = "beginning"')
    engine = await engine_factory(
        text.replace('name = "poll"\n', f'name = "poll"\nstudy_quiet_secs = {HOUR}\n')
    )
    await wait_for(lambda: engine.sources["poll"].fetched == 2, timeout=60)
    await engine.assembler.sweep()
    row = await engine.store.get_study(study.uid)
    assert row is not None and (row.state, row.expected_count) == ("receiving", None)
