"""Benchmark: a delivery queue drained to a file directory and to an MLLP EHR, one at a time
beside batched, on SQLite and on PostgreSQL, in the same run.

    .venv/bin/python -m bench.delivery [--messages 2000] [--rounds 2]
        [--stores sqlite,postgresql] [--destinations file,mllp]

For each store, destination and mode, a fresh store gets *messages* queued deliveries of
the 1.3 KB ORM^O01 (``bench.hl7gen.orm_o01``), then one ``DeliveryWorker`` drains them;
msg/s is from the first send to the last result committed. The modes, interleaved per
round so that both meet the same machine load (the best round is kept):

* ``one at a time`` (what the worker did before issue 15): the destination's
  ``max_batch`` set to 1 (the file destination fsyncs each file *and* the directory) and
  each result its own store operation (``OneByOne``), all in flight at once as the old
  worker queued them;
* ``batched``: the destination as shipped (files: ``max_batch`` 64, one directory fsync
  per batch) and the worker's results in group commits (one transaction in flight, many
  results each).

The file destination fsyncs (as shipped). The MLLP peer is ``bench.ehr_sink`` in its own
process (AA to every frame); one ACK at a time, in order, in both modes. Each run checks
that every delivery is SENT, that the directory holds one file per delivery, and that the
sink got every control id once, in queue order.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hl7gen import orm_o01
from channels.file import FileDestination, FileDestinationConfig
from channels.mllp.config import MLLPDestinationConfig
from channels.mllp.destination import MLLPDestination
from engine.flow.delivery import DeliveryWorker
from engine.model import Status
from engine.store.base import NewMessage, Outcome, open_store
from engine.store.deliveries import Finished

PY = sys.executable
PG_BASE = "postgresql://127.0.0.1:5432/test"
MODES = ("one at a time", "batched")


class Counting:
    """The real store, counting the transactions that record results."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def finish_deliveries(self, results: Sequence[Finished]) -> None:
        self.transactions += 1
        await self.store.finish_deliveries(results)


class OneByOne(Counting):
    """Each result its own store operation, all in flight at once (the worker before)."""

    async def finish_deliveries(self, results: Sequence[Finished]) -> None:
        self.transactions += len(results)
        await asyncio.gather(*(self.store.finish_deliveries([r]) for r in results))


@dataclass
class Row:
    store: str
    destination: str
    mode: str
    msg_s: float
    transactions: int


class Sink:
    """``bench.ehr_sink`` in its own process."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen([PY, "-m", "bench.ehr_sink", str(out)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.endpoint = ""
        for line in self.proc.stdout:
            if line.startswith("listening "):
                self.endpoint = line.split()[2]
            if line.strip() == "READY":
                return
        raise RuntimeError("bench.ehr_sink exited early")

    def stop(self) -> list[str]:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return self.out.read_text().split()


class Stores:
    """A fresh store per run: a SQLite file, or a fresh schema on the local PostgreSQL."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp = kind, tmp
        self.schemas: list[str] = []

    def url(self) -> str:
        tag = secrets.token_hex(4)
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp / f'rb-{tag}.db'}"
        schema = f"rb_dlv_{tag}"
        asyncio.run(_pg(f"CREATE SCHEMA {schema}"))
        self.schemas.append(schema)
        return f"{PG_BASE}?search_path={schema}"

    def close(self) -> None:
        if self.schemas:
            asyncio.run(_pg(*(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in self.schemas)))


async def _pg(*sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_BASE)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


async def queue(store: Any, destination: str, ids: list[str]) -> None:
    now = time.time()
    mids = await asyncio.gather(*(store.insert_message(
        NewMessage("ris", now, orm_o01(cid), status=Status.TRANSFORMED)) for cid in ids))
    for i in range(0, len(mids), 500):
        await store.apply_outcomes([Outcome(m, Status.TRANSFORMED,
                                            deliveries=[(destination, None)])
                                    for m in mids[i:i + 500]])


async def drain(url: str, dest: FileDestination | MLLPDestination, mode: str,
                ids: list[str]) -> tuple[float, int]:
    """Queue *ids*, drain them through *dest*: (seconds, store transactions of results)."""
    store = open_store(url)
    await store.open()
    try:
        await queue(store, "out", ids)
        counted = (OneByOne if mode == MODES[0] else Counting)(store)
        if mode == MODES[0]:
            dest.max_batch = 1
        worker = DeliveryWorker("out", dest, counted)  # type: ignore[arg-type]
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        while worker.sent < len(ids) or await _sent(store) < len(ids):  # cheap check first
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        took = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dest.close()
        return took, counted.transactions
    finally:
        await store.close()


async def _sent(store: Any) -> int:
    return int((await store.counts()).get(("ris", "SENT"), 0))


def run_file(stores: Stores, mode: str, ids: list[str], tmp: Path) -> tuple[float, int]:
    out = tmp / f"out-{secrets.token_hex(4)}"
    config = FileDestinationConfig.model_validate({"type": "file", "directory": str(out)})
    dest = FileDestination("out", config)
    took, tx = asyncio.run(drain(stores.url(), dest, mode, ids))
    files = [p for p in out.iterdir() if not p.name.startswith(".")]
    if len(files) != len(ids):
        raise SystemExit(f"file: {len(files)} files for {len(ids)} deliveries")
    return took, tx


def run_mllp(stores: Stores, mode: str, ids: list[str], tmp: Path) -> tuple[float, int]:
    sink = Sink(tmp / f"sink-{secrets.token_hex(4)}.txt")
    try:
        config = MLLPDestinationConfig.model_validate({"type": "mllp", "endpoint": sink.endpoint})
        dest = MLLPDestination("out", config)
        took, tx = asyncio.run(drain(stores.url(), dest, mode, ids))
    finally:
        got = sink.stop()
    if got != ids:
        raise SystemExit(f"mllp: the sink got {len(got)} messages, not the {len(ids)} in order")
    return took, tx


RUNNERS = {"file": run_file, "mllp": run_mllp}


def bench(store_kinds: list[str], dests: list[str], n: int, rounds: int) -> list[Row]:
    best: dict[tuple[str, str, str], Row] = {}
    with tempfile.TemporaryDirectory(prefix="radbridge-delivery-") as d:
        tmp = Path(d)
        for kind in store_kinds:
            stores = Stores(kind, tmp)
            try:
                for r in range(rounds):
                    for dest_name in dests:
                        run = RUNNERS[dest_name]
                        for mode in MODES:
                            ids = [f"D{r}{i:07d}" for i in range(n)]
                            took, tx = run(stores, mode, ids, tmp)
                            row = Row(kind, dest_name, mode, n / took, tx)
                            key = (kind, dest_name, mode)
                            if key not in best or row.msg_s > best[key].msg_s:
                                best[key] = row
            finally:
                stores.close()
    return list(best.values())


def table(rows: list[Row], n: int) -> str:
    lines = [f"{n} queued deliveries of the 1.3 KB ORM^O01 each; msg/s from the first send "
             "to the last result committed (best round)",
             "",
             "| store | destination | mode | msg/s | result transactions | ratio |",
             "|---|---|---|---:|---:|---:|"]
    base = {(r.store, r.destination): r.msg_s for r in rows if r.mode == MODES[0]}
    for r in rows:
        ratio = r.msg_s / base[(r.store, r.destination)]
        lines.append(f"| {r.store} | {r.destination} | {r.mode} | {r.msg_s:,.0f} | "
                     f"{r.transactions:,} | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--destinations", default=",".join(RUNNERS))
    args = parser.parse_args()
    rows = bench(args.stores.split(","), args.destinations.split(","), args.messages,
                 args.rounds)
    print(table(rows, args.messages))


if __name__ == "__main__":
    main()
