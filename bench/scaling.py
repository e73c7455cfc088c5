"""Scale-out throughput: 1, 2 and 4 engine processes on PostgreSQL beside 1 on SQLite.

``python -m bench.scaling [--seconds 5] [--connections 16]`` prints one table:

- **ingest**: messages ACKed AA per second over MLLP (the load is split over the
  processes; the total number of connections stays the same, one patient each);
- **end-to-end**: messages per second from the start of the load until every
  one of them is SENT to a downstream MLLP sink (ingest → pipeline → delivery);
- **durable**: every ACKed message is in the store.

Every process is a real ``radbridge run``; the sink and the load generators run
as their own processes. Figures depend on the cores the machine has: on a
2-core machine four engines, PostgreSQL and the load share two CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.hl7gen import orm_o01
from bench.mllp_ingest import start_server
from channels.mllp.framing import Frame, MLLPFramer, frame

PY = sys.executable
PG = "postgresql://postgres@127.0.0.1:5432/test"


# -- the downstream sink and the load, each run as ``python -m bench.scaling sink|load`` ----

async def _sink() -> None:
    """Answer every HL7 message AA at once (MSA-2 = its MSH-10), printing the port first."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = MLLPFramer()
        while data := await reader.read(65536):
            for ev in framer.feed(data):
                if isinstance(ev, Frame):
                    cid = ev.payload.split(b"\r", 1)[0].split(b"|")[9]
                    writer.write(frame(b"MSH|^~\\&|SINK|BENCH|||20260101||ACK|A" + cid
                                       + b"|P|2.5.1\rMSA|AA|" + cid))
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def _load(host: str, port: int, conns: int, seconds: float, tag: str) -> None:
    """*conns* connections, one patient each, one message in flight each."""
    deadline = time.perf_counter() + seconds
    acked = 0

    async def one(c: int) -> None:
        nonlocal acked
        reader, writer = await asyncio.open_connection(host, port)
        template = orm_o01("CTRLID_PLACEHOLDER_", patient_id=f"{tag}P{c:03d}")
        framer, n = MLLPFramer(), 0
        while time.perf_counter() < deadline:
            n += 1
            cid = f"{tag}{c:03d}{n:09d}".encode()
            writer.write(frame(template.replace(b"CTRLID_PLACEHOLDER_", cid)))
            got = None
            while got is None:
                for ev in framer.feed(await reader.read(65536)):
                    if isinstance(ev, Frame):
                        got = ev.payload
            if b"MSA|AA|" in got or b"MSA|CA|" in got:  # enhanced mode (MSH-15 AL): CA
                acked += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(conns)))
    print(json.dumps({"acked": acked, "seconds": time.perf_counter() - start}), flush=True)


# -- the benchmark ------------------------------------------------------------------------

@dataclass
class Row:
    store: str
    processes: int
    acked: int
    ingest_rate: float
    e2e_rate: float
    durable: bool


def _config(tmp: Path, url: str, sink_port: int, n: int) -> Path:
    cfg = tmp / f"engine{n}.toml"
    cfg.write_text(f"""
[store]
url = "{url}"
[engine]
data_dir = "{tmp / 'var'}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["ehr"]
[[channel]]
name = "ehr"
destination = {{ type = "mllp", endpoint = "127.0.0.1:{sink_port}" }}
""")
    return cfg


def _pg(*sql: str, fetch: bool = False) -> int:
    import asyncpg

    async def run() -> int:
        conn = await asyncpg.connect(PG)
        try:
            for s in sql[:-1]:
                await conn.execute(s)
            if fetch:
                return int(await conn.fetchval(sql[-1]))
            await conn.execute(sql[-1])
            return 0
        finally:
            await conn.close()

    return asyncio.run(run())


class Counter:
    """Counts stored and SENT messages in the store under test."""

    def __init__(self, url: str, schema: str | None) -> None:
        self.url, self.schema = url, schema

    def count(self, where: str = "true") -> int:
        if self.schema is not None:
            return _pg(f"SET search_path = {self.schema}",
                       f"SELECT count(*) FROM messages WHERE {where}", fetch=True)
        conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
        try:
            return int(conn.execute(f"SELECT count(*) FROM messages WHERE {where}").fetchone()[0])
        finally:
            conn.close()


def run_one(tmp: Path, store: str, procs: int, conns: int, seconds: float, sink_port: int
            ) -> Row:
    schema = None
    if store == "postgresql":
        schema = f"rb_bench_{secrets.token_hex(4)}"
        _pg(f"CREATE SCHEMA {schema}")
        url = f"{PG}?search_path={schema}"
    else:
        url = f"sqlite:///{tmp / f'bench{procs}.db'}"
    counter = Counter(url, schema)
    engines = [start_server([PY, "-m", "engine.cli", "run", str(_config(tmp, url, sink_port, i)),
                             "--log-level", "WARNING"]) for i in range(procs)]
    try:
        t0 = time.perf_counter()
        loads = [subprocess.Popen([PY, "-m", "bench.scaling", "load", host, str(port),
                                   str(max(1, conns // procs)), str(seconds), f"E{i}"],
                                  stdout=subprocess.PIPE, text=True)
                 for i, (_, host, port) in enumerate(engines)]
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in loads]
        acked = sum(int(r["acked"]) for r in results)
        ingest = acked / max(float(r["seconds"]) for r in results)
        total = counter.count()
        while counter.count("status = 'SENT'") < total and time.perf_counter() - t0 < 600:
            time.sleep(0.1)
        e2e = total / (time.perf_counter() - t0)
        durable = total >= acked
    finally:
        for proc, _, _ in engines:
            proc.terminate()
            proc.wait(30)
        if schema is not None:
            _pg(f"DROP SCHEMA {schema} CASCADE")
    return Row(store, procs, acked, ingest, e2e, durable)


def print_table(rows: list[Row]) -> None:
    print(f"{'store':11} {'procs':>5} {'ingest msg/s':>13} {'e2e msg/s':>10} {'acked':>7}"
          f" {'durable':>8}")
    for r in rows:
        print(f"{r.store:11} {r.processes:>5} {r.ingest_rate:>13.0f} {r.e2e_rate:>10.0f}"
              f" {r.acked:>7} {'yes' if r.durable else 'NO':>8}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "sink":
        asyncio.run(_sink())
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        host, port, conns, secs, tag = sys.argv[2:7]
        asyncio.run(_load(host, int(port), int(conns), float(secs), tag))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=16, help="in total, over all processes")
    ap.add_argument("--processes", default="1,2,4", help="engine processes on PostgreSQL")
    args = ap.parse_args()
    sink = subprocess.Popen([PY, "-m", "bench.scaling", "sink"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert sink.stdout is not None
        sink_port = int(sink.stdout.readline())
        rows = []
        with tempfile.TemporaryDirectory(prefix="radbridge-scaling-") as d:
            rows.append(run_one(Path(d), "sqlite", 1, args.connections, args.seconds,
                                sink_port))
            for n in (int(p) for p in args.processes.split(",")):
                rows.append(run_one(Path(d), "postgresql", n, args.connections, args.seconds,
                                    sink_port))
    finally:
        sink.terminate()
        sink.wait(30)
    print_table(rows)
    return 0 if all(r.durable for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
