"""Orders meet studies: either order first, Study UID or accession + patient, cancel, merge."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from bench.hl7gen import orm_o01
from channels.mllp.client import MLLPClient
from engine.flow.instances import InstanceIngest
from engine.flow.retention import Retention
from engine.flow.runtime import Engine
from mappings.hl7v2.ack import read_ack
from tests.conftest import wait_for
from tests.fixtures.studies import COMPREHENSIVE_3D_SR, make_instance


def orders_config(db_url: str, data_dir: Path) -> str:
    return f"""
[store]
url = "{db_url}"
[engine]
data_dir = "{data_dir}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
process = "orders"
"""


async def start(engine_factory: Any, db_url: str, tmp_path: Path) -> tuple[Engine, InstanceIngest]:
    engine = await engine_factory(orders_config(db_url, tmp_path))
    engine.assembler.sweep_secs = 0.05
    ingest = InstanceIngest("pacs", engine.store, tmp_path, quiet_secs=0.2)
    return engine, ingest


async def send_hl7(engine: Engine, *messages: bytes) -> None:
    client = MLLPClient(*engine.address("ris"))
    for m in messages:
        assert read_ack(await client.send(m))[0] in ("AA", "CA")
    await client.close()


def orm(cid: str, accession: str, patient: str = "MRN0001", study_uid: str = "",
        control: str = "NW", status: str = "SC") -> bytes:
    raw = orm_o01(cid, patient_id=patient, accession=accession)
    raw = raw.replace(b"ORC|NW|", f"ORC|{control}|".encode()).replace(b"||SC||", f"||{status}||"
                                                                       .encode())
    lines = [ln for ln in raw.split(b"\r") if not ln.startswith(b"ZDS")]
    if study_uid:
        lines.append(f"ZDS|{study_uid}^RADBRIDGE^Application^DICOM".encode())
    return b"\r".join(lines)


async def send_study(ingest: InstanceIngest, uid: str, n: int = 3, **kw: Any) -> None:
    series = generate_uid()
    for _ in range(n):
        await ingest.ingest(make_instance(uid, series_uid=series, **kw))


async def cases_of(engine: Engine, uid: str) -> list[Any]:
    return [c for c in await engine.store.list_cases() if c.study_uid == uid]


async def test_order_first_then_study_makes_one_case(engine_factory: Any, db_url: str,
                                                     tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    await send_hl7(engine, orm("O1", "ACC1"))
    await wait_for(lambda: _order_count(engine, 1))
    uid = generate_uid()
    await send_study(ingest, uid, accession="ACC1")
    await wait_for(lambda: cases_of(engine, uid))
    (case,) = await cases_of(engine, uid)
    assert (case.state, case.accession, case.patient_id, case.priority) == ("ready", "ACC1",
                                                                            "MRN0001", "S")
    study = await engine.store.get_study(uid)
    assert study is not None and (study.instance_count, study.series_count) == (3, 1)


async def _order_count(engine: Engine, n: int) -> bool:
    return len(await engine.store.list_orders()) == n


async def test_study_first_then_order_makes_one_case(engine_factory: Any, db_url: str,
                                                     tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_study(ingest, uid, accession="ACC2")
    await wait_for(lambda: _state(engine, uid, "complete"))
    assert await cases_of(engine, uid) == []
    _, studies = await engine.store.unmatched(time.time() + 1)
    assert [s.uid for s in studies] == [uid]
    await send_hl7(engine, orm("O2", "ACC2"))
    await wait_for(lambda: cases_of(engine, uid))
    assert len(await cases_of(engine, uid)) == 1


async def _state(engine: Engine, uid: str, state: str) -> bool:
    study = await engine.store.get_study(uid)
    return study is not None and study.state == state


async def test_study_uid_in_the_order_matches_without_accession(engine_factory: Any, db_url: str,
                                                                tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_hl7(engine, orm("O3", "ACC3", study_uid=uid))
    await send_study(ingest, uid, accession=None, patient_id="OTHER-ID")
    await wait_for(lambda: cases_of(engine, uid))


async def test_same_accession_from_another_issuer_does_not_match(engine_factory: Any,
                                                                  db_url: str,
                                                                  tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    await send_hl7(engine, orm("O4", "ACC4"))
    uid = generate_uid()
    await send_study(ingest, uid, accession="ACC4", issuer="OTHERHOSP")
    await wait_for(lambda: _state(engine, uid, "complete"))
    assert await cases_of(engine, uid) == []


async def test_a_cancelled_order_cancels_its_case(engine_factory: Any, db_url: str,
                                                  tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_hl7(engine, orm("O5", "ACC5"))
    await send_study(ingest, uid, accession="ACC5")
    await wait_for(lambda: cases_of(engine, uid))
    await send_hl7(engine, orm("O5C", "ACC5", control="CA", status="CA"))
    await wait_for(lambda: _case_state(engine, uid, "cancelled"))


@pytest.mark.parametrize("control", ["CR", "OC", "DC"])
async def test_an_order_control_of_cr_oc_or_dc_cancels_its_case_like_ca(
        control: str, engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_hl7(engine, orm("O5", "ACC5"))
    await send_study(ingest, uid, accession="ACC5")
    await wait_for(lambda: cases_of(engine, uid))
    await send_hl7(engine, orm("O5X", "ACC5", control=control, status="IP"))
    await wait_for(lambda: _case_state(engine, uid, "cancelled"))


async def _case_state(engine: Engine, uid: str, state: str) -> bool:
    return [c.state for c in await cases_of(engine, uid)] == [state]


async def test_a_merge_relinks_the_old_patients_study(engine_factory: Any, db_url: str,
                                                      tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_study(ingest, uid, accession="ACC6", patient_id="OLD-MRN")
    await send_hl7(engine, orm("O6", "ACC6", patient="NEW-MRN"))
    await wait_for(lambda: _state(engine, uid, "complete"))
    assert await cases_of(engine, uid) == []
    a40 = (b"MSH|^~\\&|ADT|GENHOSP|RB|AI|2026||ADT^A40^ADT_A39|M1|P|2.5.1\rEVN|A40|2026\r"
           b"PID|1||NEW-MRN^^^GENHOSP^MR||DOE^ALEX\rMRG|OLD-MRN^^^GENHOSP^MR")
    await send_hl7(engine, a40)
    await wait_for(lambda: cases_of(engine, uid))
    study = await engine.store.get_study(uid)
    assert study is not None and study.patient_id == "NEW-MRN"


async def test_order_status_cm_completes_a_receiving_study_at_once(engine_factory: Any,
                                                                   db_url: str,
                                                                   tmp_path: Path) -> None:
    engine, _ = await start(engine_factory, db_url, tmp_path)
    slow = InstanceIngest("pacs", engine.store, tmp_path, quiet_secs=3600)
    uid = generate_uid()
    await send_study(slow, uid, accession="ACC7")
    await send_hl7(engine, orm("O7", "ACC7", control="SC", status="CM"))
    await wait_for(lambda: cases_of(engine, uid))
    assert await _state(engine, uid, "complete")


async def test_a_late_instance_opens_a_new_revision_and_a_new_case(engine_factory: Any,
                                                                   db_url: str,
                                                                   tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_hl7(engine, orm("O8", "ACC8"))
    await wait_for(lambda: _order_count(engine, 1))
    await send_study(ingest, uid, accession="ACC8")
    await wait_for(lambda: cases_of(engine, uid))
    await send_study(ingest, uid, n=1, accession="ACC8")
    await wait_for(lambda: _revisions(engine, uid, [1, 0]))


async def _revisions(engine: Engine, uid: str, revs: list[int]) -> bool:
    return [c.revision for c in await cases_of(engine, uid)] == revs


async def test_our_own_sr_coming_back_does_not_reopen_the_study(engine_factory: Any, db_url: str,
                                                                tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_study(ingest, uid, accession="ACC9")
    await wait_for(lambda: _state(engine, uid, "complete"))
    result = await ingest.ingest(make_instance(uid, sop_class=COMPREHENSIVE_3D_SR, modality="SR",
                                               manufacturer="RADBRIDGE", accession="ACC9"))
    assert result.added.ignored and not result.added.reopened
    study = await engine.store.get_study(uid)
    assert study is not None and (study.state, study.revision, study.instance_count) == (
        "complete", 0, 3)


async def test_an_unmatched_study_can_proceed_study_only(engine_factory: Any, db_url: str,
                                                         tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_study(ingest, uid, accession="NOORDER")
    await wait_for(lambda: _state(engine, uid, "complete"))
    case = await engine.store.proceed_study_only(uid)
    assert case is not None and case.state == "study_only" and case.order_id is None


async def test_retention_deletes_old_instance_files(engine_factory: Any, db_url: str,
                                                    tmp_path: Path) -> None:
    engine, ingest = await start(engine_factory, db_url, tmp_path)
    uid = generate_uid()
    await send_study(ingest, uid, n=4)
    files = list((tmp_path / "instances").rglob("*.dcm"))
    assert len(files) == 4
    size = sum(f.stat().st_size for f in files)
    n, freed = await Retention(engine.store, days=1).run_once(now=time.time() + 2 * 86400)
    assert (n, freed) == (4, size)
    assert not any(f.exists() for f in files)
    assert not (tmp_path / "instances" / uid).exists()
    assert await engine.store.instance_paths(uid) == []
