"""Traversal: a DICOM UID can never take an instance file out of the instance store.

Over real C-STORE (dcmtk storescu, pynetdicom) and real STOW-RS HTTP, an
instance whose Study, Series or SOP Instance UID breaks the UID grammar
(``..`` first of all) is refused with the reason (0xA900 / FailureReason
0xA900, HTTP 409) and nothing is written anywhere. Behind that check, the
instance store refuses any path that would leave its root, and retention
never deletes a file outside it, whatever a row says.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from engine.flow.instances import InstanceIngest, OutsideStore
from engine.flow.retention import Retention
from engine.store.clinical import InstanceMeta
from tests.fixtures.dicom import CT_IMAGE, ingest_config, part10, synth_instance, write
from tests.integration.test_dicom_ingest import scu_store, tool

FAILED, REASON = "00081198", "00081197"
BOUNDARY = "traversal-boundary"
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
BAD_UIDS = ["..", "../..", "1.2/../../3", "1..2", "1.02.3", "1.2.", "9" * 65]
FIELDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


def config(db_url: str, data_dir: Path) -> str:
    return ingest_config(db_url, data_dir)


def hostile(field: str, uid: str) -> Dataset:
    """A valid CT image but for one UID."""
    with pydicom.config.disable_value_validation():
        ds = synth_instance(generate_uid(), generate_uid(), 1)
        setattr(ds, field, uid)
        if field == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = uid
    return ds


def dcm_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


@pytest.fixture
async def engine(engine_factory: Any, db_url: str, tmp_path: Path) -> Any:
    """An engine whose data directory sits two levels down, so ``../..`` would still be ours
    to look at."""
    return await engine_factory(config(db_url, tmp_path / "deep" / "a" / "data"))


async def stow(engine: Any, data: bytes) -> tuple[int, Any, str]:
    host, port = engine.address("web")
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://{host}:{port}/studies", data=body, headers={"Content-Type": RELATED}
        ) as resp,
    ):
        return resp.status, json.loads(await resp.text()), resp.headers.get("Warning", "")


@pytest.mark.parametrize("field", FIELDS)
async def test_storescu_with_a_dot_dot_uid_is_answered_0xa900_and_nothing_is_written(
    engine: Any, tmp_path: Path, field: str
) -> None:
    path = write(hostile(field, ".."), tmp_path / "send" / "hostile.dcm")
    host, port = engine.address("pacs")
    rc, out = await tool(
        "storescu", "-v", "-aet", "MODALITY", "-aec", "RADBRIDGE", host, str(port), path
    )
    assert "Received Store Response (Error: DataSetDoesNotMatchSOPClass)" in out, out
    assert dcm_files(tmp_path / "deep") == []
    assert engine.sources["pacs"].failed == 1


async def test_pynetdicom_with_dot_dot_study_and_series_uids_hears_the_reason(
    engine: Any, tmp_path: Path
) -> None:
    with pydicom.config.disable_value_validation():
        ds = synth_instance("..", "..", 1)
    path = write(ds, tmp_path / "send" / "hostile.dcm")
    status = await asyncio.to_thread(scu_store, engine.address("pacs"), path)
    assert (status.Status, status.ErrorComment) == (
        0xA900,
        "StudyInstanceUID is not a valid UID (empty component)",
    )
    assert dcm_files(tmp_path / "deep") == []


@pytest.mark.parametrize("uid", BAD_UIDS)
@pytest.mark.parametrize("field", FIELDS)
async def test_stow_rs_refuses_an_invalid_uid_with_409_and_the_reason(
    engine: Any, tmp_path: Path, field: str, uid: str
) -> None:
    status, body, warning = await stow(engine, part10(hostile(field, uid)))
    assert status == 409
    assert [i[REASON]["Value"] for i in body[FAILED]["Value"]] == [[0xA900]]
    assert f"{field} is not a valid UID (" in warning
    assert dcm_files(tmp_path / "deep") == []


async def test_a_valid_instance_still_lands_under_the_instance_store(
    engine: Any, tmp_path: Path
) -> None:
    status, _, _ = await stow(engine, part10(synth_instance(generate_uid(), generate_uid(), 1)))
    assert status == 200
    (stored,) = dcm_files(tmp_path / "deep")
    assert stored.is_relative_to(tmp_path / "deep" / "a" / "data" / "instances")


@pytest.mark.parametrize(
    "study,series", [("..", ".."), ("x", "../../../escaped"), ("{tmp}", "absolute")]
)
async def test_the_instance_store_refuses_a_path_outside_its_root_whatever_the_meta(
    engine: Any, tmp_path: Path, study: str, series: str
) -> None:
    """Defence in depth: the store's own check, with the UID grammar bypassed."""
    study = study.format(tmp=tmp_path)
    sink: InstanceIngest = engine.sources["web"].sink
    meta = InstanceMeta(study, series, "1.2.3", CT_IMAGE, "1.2.840.10008.1.2.1")
    data = part10(synth_instance(generate_uid(), generate_uid(), 1))
    with pytest.raises(OutsideStore, match="would leave the instance store"):
        await sink.ingest(data, meta)
    assert dcm_files(tmp_path) == []
    assert await engine.store.get_study(study) is None


async def test_retention_never_deletes_a_file_outside_the_instance_store(
    engine: Any, tmp_path: Path
) -> None:
    root = tmp_path / "deep" / "a" / "data" / "instances"
    victim = tmp_path / "deep" / "a" / "victim.dcm"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(b"not ours")
    inside = root / "1.2" / "1.3" / "1.4.dcm"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_bytes(b"ours")
    for sop, path in (("1.4", inside), ("1.5", root / ".." / ".." / "victim.dcm")):
        meta = InstanceMeta("1.2", "1.3", sop, CT_IMAGE, "1.2.840.10008.1.2.1")
        await engine.store.add_instance("web", meta, str(path), 4, 60)
    retention = Retention(engine.store, days=1, instances_root=root)
    files, _ = await retention.run_once(now=time.time() + 2 * 86400)
    assert files == 2  # both rows are gone from the index
    assert not inside.exists() and not inside.parent.exists()
    assert victim.read_bytes() == b"not ours"
    assert root.is_dir()
