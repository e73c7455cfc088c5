"""A STOW-RS request is made durable as one: its files written and fsynced part by part, each
folder fsynced once, every row indexed in one transaction; a part that fails fails alone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest

from engine.errors import StoreError
from engine.flow.durable import DirSync, fsync_dir
from tests.integration.test_dicomweb import (
    BOUNDARY,
    FAILED,
    REASON,
    REFERENCED,
    http,
    multipart,
    post,
    stow_config,
    study_parts,
)

__all__ = ["http"]  # the fixture, imported for these tests


def counting_dirsync(engine: Any) -> Counter[Path]:
    """Count the folder fsyncs of the engine's STOW channel (the real fsync still runs)."""
    synced: Counter[Path] = Counter()

    def fsync(directory: Path) -> None:
        synced[directory] += 1
        fsync_dir(directory)

    engine.sources["web"].sink.dirsync = DirSync(fsync)
    return synced


async def test_one_request_syncs_each_folder_once_and_indexes_at_one_instant(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    synced = counting_dirsync(engine)
    study, parts = study_parts(tmp_path, [("CT", 3), ("CT", 2)])
    status, body = await post(http, engine, multipart(parts))
    assert status == 200 and len(body[REFERENCED]["Value"]) == 5
    root = tmp_path / "data" / "instances"
    series = {p.parent for p in root.rglob("*.dcm")}
    assert len(series) == 2
    assert synced == Counter({root: 1, root / study.uid: 1, **dict.fromkeys(series, 1)})
    row = await engine.store.get_study(study.uid)
    assert row is not None and (row.instance_count, row.series_count) == (5, 2)
    assert row.first_at == row.last_at  # one transaction: every row received at one instant


async def test_a_batch_the_store_refuses_is_indexed_part_by_part_and_only_the_bad_part_fails(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    study, parts = study_parts(tmp_path, [("CT", 3)])
    bad_sop = pydicom.dcmread(study.paths[1]).SOPInstanceUID
    add_one = engine.store.add_instance

    async def refuse_batch(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("constraint failed")

    async def refuse_one(channel: str, meta: Any, *args: Any) -> Any:
        if meta.sop_uid == bad_sop:
            raise StoreError("constraint failed")
        return await add_one(channel, meta, *args)

    monkeypatch.setattr(engine.store, "add_instances", refuse_batch)
    monkeypatch.setattr(engine.store, "add_instance", refuse_one)
    status, body = await post(http, engine, multipart(parts))
    assert status == 202
    assert len(body[REFERENCED]["Value"]) == 2
    (failed,) = body[FAILED]["Value"]
    assert failed["00081155"]["Value"] == [bad_sop]
    assert failed[REASON]["Value"] == [0x0110]
    row = await engine.store.get_study(study.uid)
    assert row is not None and row.instance_count == 2


async def test_parts_read_before_a_malformed_one_are_still_made_durable_and_indexed(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    study, parts = study_parts(tmp_path, [("CT", 2)])
    good = multipart(parts[:1]).removesuffix(f"--{BOUNDARY}--\r\n".encode())
    unclosed = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + parts[1]
    status, text = await post(http, engine, good + unclosed)
    assert status == 400 and text.startswith("malformed multipart/related body")
    row = await engine.store.get_study(study.uid)
    assert row is not None and row.instance_count == 1
    (stored,) = (tmp_path / "data" / "instances").rglob("*.dcm")
    assert stored.read_bytes() == parts[0]
    assert not list((tmp_path / "data" / "instances").rglob("*.tmp"))


async def test_a_later_request_into_a_settled_series_syncs_that_folder_alone(
        engine_factory: Any, db_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    engine = await engine_factory(stow_config(db_url, tmp_path / "data"))
    _, parts = study_parts(tmp_path, [("CT", 4)])
    assert (await post(http, engine, multipart(parts[:2])))[0] == 200
    synced = counting_dirsync(engine)  # from here on: the series folder exists, settled
    assert (await post(http, engine, multipart(parts[2:])))[0] == 200
    (series,) = {p.parent for p in (tmp_path / "data" / "instances").rglob("*.dcm")}
    assert synced == Counter({series: 1})
