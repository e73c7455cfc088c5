"""Destinations that batch, and results written in group commits (issue 15, item 2).

A ``DeliveryWorker`` on a real store (SQLite and PostgreSQL) sends to a real file
directory and to a real MLLP peer (python-hl7). The file destination writes up to
``max_batch`` files and fsyncs their directory once; a failure stops the batch where it
happens and is carried alone while the ones behind it keep their order. The results of a
batch are one store transaction; an MLLP queue keeps sending while a result's write is in
flight (``GatedStore`` holds the first write until every message has been ACKed).
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from bench.hl7gen import adt_a01
from channels.file import FileDestination, FileDestinationConfig, file_stem
from channels.mllp.config import MLLPDestinationConfig
from channels.mllp.destination import MLLPDestination
from engine import outfiles
from engine.flow.delivery import DeliveryWorker
from engine.model import DeliveryRef, DeliveryStatus, Status
from engine.outfiles import write_new
from engine.store.base import NewMessage, Outcome
from engine.store.deliveries import Finished
from mappings.hl7v2.header import parse_header
from tests.conftest import wait_for
from tests.fixtures.peers import HL7Sink


class CountingStore:
    """The real store, counting the transactions that record results (``finish_deliveries``)
    and, while ``gate`` is clear, holding them back (a store that is slow to commit)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.writes: list[int] = []  # how many results each transaction carried
        self.gate = asyncio.Event()
        self.gate.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def finish_deliveries(self, results: Sequence[Finished]) -> None:
        self.writes.append(len(results))
        await self.gate.wait()
        await self.store.finish_deliveries(results)


async def queue(store: Any, destination: str, payloads: list[bytes]) -> list[int]:
    """One message per payload, each with one QUEUED delivery to *destination*: their ids."""
    now = time.time()
    ids = [await store.insert_message(NewMessage("ris", now, p, status=Status.TRANSFORMED))
           for p in payloads]
    await store.apply_outcomes([Outcome(m, Status.TRANSFORMED, deliveries=[(destination, None)])
                                for m in ids])
    return [d.id for d in await store.next_deliveries(destination, len(ids) + 1)]


async def states(store: Any, n: int) -> list[tuple[str, int, str | None]]:
    """(status, attempts, error) of the delivery of messages 1..n."""
    out = []
    for mid in range(1, n + 1):
        _, (d,) = await store.get_message(mid)
        out.append((str(d.status), d.attempts, d.error))
    return out


async def all_final(store: Any, n: int) -> bool:
    counts = await store.counts()
    return counts.get(("ris", "SENT"), 0) + counts.get(("ris", "ERROR"), 0) == n


async def run_until_final(worker: DeliveryWorker, store: Any, n: int) -> None:
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: all_final(store, n), timeout=60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def file_destination(out: Path) -> FileDestination:
    config = FileDestinationConfig.model_validate({"type": "file", "directory": str(out)})
    return FileDestination("out", config)


def archived(out: Path) -> list[str]:
    """MSH-10 of each file, in name order (our ids: queue order)."""
    return [parse_header(f.read_bytes()).control_id for f in sorted(out.glob("*.hl7"))]


def messages(n: int, prefix: str = "B") -> tuple[list[str], list[bytes]]:
    ids = [f"{prefix}{i}" for i in range(n)]
    return ids, [adt_a01(cid, patient_id=f"P{i % 7}") for i, cid in enumerate(ids)]


# -- the file destination ---------------------------------------------------------------------

async def test_a_file_batch_is_written_in_order_and_recorded_in_one_transaction_per_batch(
        store: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dest = file_destination(out)
    ids, payloads = messages(150)
    await queue(store, "out", payloads)
    counted = CountingStore(store)
    await run_until_final(DeliveryWorker("out", dest, counted), store, 150)
    assert [s[0] for s in await states(store, 150)] == ["SENT"] * 150
    assert archived(out) == ids
    # A batch of max_batch (64) files is one transaction, or shares one with the next batch
    # when that is written while the first commits: never one transaction per file.
    assert sum(counted.writes) == 150 and len(counted.writes) <= 3
    assert counted.writes[0] == 64
    assert (await store.get_message(1))[0].status == Status.SENT
    assert {oct(f.stat().st_mode & 0o777) for f in out.iterdir()} == {"0o600"}


async def test_a_refused_file_in_a_batch_ends_error_alone_and_the_ones_behind_follow_in_order(
        store: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ids, payloads = messages(40)
    dids = await queue(store, "out", payloads)
    stem = file_stem(DeliveryRef(10, dids[9]))  # every name of the 10th holds other bytes
    for name in [f"{stem}.hl7", *(f"{stem}.{n}.hl7" for n in range(1, 100))]:
        (out / name).write_bytes(b"someone else's")
    await run_until_final(DeliveryWorker("out", file_destination(out), store), store, 40)
    got = await states(store, 40)
    assert got[9][0] == "ERROR" and "100 names taken" in (got[9][2] or "")
    assert [s[0] for i, s in enumerate(got) if i != 9] == ["SENT"] * 39
    ours = sorted(f for f in out.glob("*.hl7") if f.read_bytes() != b"someone else's")
    assert [parse_header(f.read_bytes()).control_id for f in ours] == ids[:9] + ids[10:]
    msg, _ = await store.get_message(10)
    assert msg.status == Status.ERROR


async def test_a_full_disk_in_the_middle_of_a_batch_keeps_that_file_at_the_head_until_written(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, real = iter(range(10_000)), outfiles._write_tmp

    def full_at_the_fifth(tmp: Path, payload: bytes) -> IO[bytes]:
        if next(calls) in (4, 5):  # the fifth file, and its first retry
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tmp, payload)

    monkeypatch.setattr(outfiles, "_write_tmp", full_at_the_fifth)
    out = tmp_path / "out"
    dest = file_destination(out)
    dest.retry_initial_secs = 0.05
    ids, payloads = messages(20)
    await queue(store, "out", payloads)
    worker = DeliveryWorker("out", dest, store)
    await run_until_final(worker, store, 20)
    got = await states(store, 20)
    assert [s[0] for s in got] == ["SENT"] * 20
    assert got[4][1] == 3 and worker.retries == 2  # two failed tries, then written
    assert [s[1] for i, s in enumerate(got) if i != 4] == [1] * 19
    assert archived(out) == ids


async def test_a_file_written_before_a_crash_counts_as_sent_and_is_never_copied(
        store: Any, tmp_path: Path) -> None:
    """A crash after the files of a batch were written but before their results were
    committed: the deliveries are still QUEUED; the resend finds its own bytes."""
    out = tmp_path / "out"
    ids, payloads = messages(10)
    dids = await queue(store, "out", payloads)
    for i in (0, 3, 4):  # written by the attempt that crashed
        write_new(out, file_stem(DeliveryRef(i + 1, dids[i])), ".hl7", payloads[i], True)
    await run_until_final(DeliveryWorker("out", file_destination(out), store), store, 10)
    assert [s[0] for s in await states(store, 10)] == ["SENT"] * 10
    assert archived(out) == ids  # ten files: no ``.1`` copy
    assert len(list(out.iterdir())) == 10  # and no temporary file left behind


# -- the MLLP destination: one ACK at a time, never waiting on the store ------------------------

async def test_an_mllp_queue_keeps_sending_while_a_result_is_being_recorded(
        store: Any, sink: HL7Sink) -> None:
    config = MLLPDestinationConfig.model_validate({"type": "mllp", "endpoint": sink.endpoint})
    dest = MLLPDestination("ehr", config)
    ids, payloads = messages(30, "M")
    await queue(store, "ehr", payloads)
    counted = CountingStore(store)
    counted.gate.clear()  # the first result's transaction does not commit...
    worker = DeliveryWorker("ehr", dest, counted)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: len(sink.control_ids) == 30)  # ...yet every message goes
        assert sink.control_ids == ids  # in order, one ACK at a time
        assert counted.writes == [1]  # the first result, still in flight
        assert [s[0] for s in await states(store, 30)] == ["QUEUED"] * 30
        counted.gate.set()
        await wait_for(lambda: all_final(store, 30))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dest.close()
    assert counted.writes == [1, 29]  # what came meanwhile: the next transaction
    got = await states(store, 30)
    assert [s[0] for s in got] == ["SENT"] * 30
    _, (d,) = await store.get_message(30)
    assert d.status == DeliveryStatus.SENT and d.response is not None
    assert sink.control_ids == ids  # nothing sent twice


# -- engine.outfiles.write_batch ----------------------------------------------------------------

def test_a_batch_stops_at_the_first_file_that_cannot_be_named_and_leaves_no_temporary_file(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ["c.hl7", *(f"c.{n}.hl7" for n in range(1, 100))]:
        (out / name).write_bytes(b"other bytes")
    paths, error = outfiles.write_batch(out, [("a", b"A"), ("b", b"B"), ("c", b"C"),
                                              ("d", b"D")], ".hl7", fsync=True)
    assert [p.name for p in paths] == ["a.hl7", "b.hl7"]
    assert isinstance(error, FileExistsError)
    assert not (out / "d.hl7").exists()  # behind the failure: not written
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "b.hl7").read_bytes() == b"B"


def test_a_full_disk_in_a_batch_keeps_what_was_written_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, real = iter(range(100)), outfiles._write_tmp

    def full_at_the_third(tmp: Path, payload: bytes) -> IO[bytes]:
        if next(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tmp, payload)

    monkeypatch.setattr(outfiles, "_write_tmp", full_at_the_third)
    files = [(f"m{i}", b"%d" % i) for i in range(5)]
    paths, error = outfiles.write_batch(tmp_path, files, ".hl7", fsync=True)
    assert [p.name for p in paths] == ["m0.hl7", "m1.hl7"]
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.hl7", "m1.hl7"]
    # the resend of the whole batch: the two already there count as written, not copied
    paths, error = outfiles.write_batch(tmp_path, files, ".hl7", fsync=True)
    assert error is None and [p.name for p in paths] == [f"m{i}.hl7" for i in range(5)]
    assert len(list(tmp_path.iterdir())) == 5
