"""Benchmark: durable MLLP ingest, radbridge beside the bare asyncio+SQLite reference.

    .venv/bin/python -m bench.mllp_ingest [--seconds 5] [--connections 1,8,64]

Each server runs in its own process, the load generator in another; the runs
alternate between the two servers (radbridge, then the reference, for each
connection count) so that both meet the same machine load. Every
message is committed (SQLite WAL, synchronous=FULL) before its ACK; after each
run the bench counts the stored rows and checks that every ACKed message is
there. Prints messages/s and p50/p99 ACK latency, and radbridge's ratio to the
reference (goal >= 0.5; target >= 10,000 msg/s at 64 connections, p99 < 20 ms).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PY = sys.executable
SETTLE_SECS = 1.0  # between runs: the previous server's pipeline catches up first


def start_server(cmd: list[str]) -> tuple[subprocess.Popen[str], str, int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    host, port = "", 0
    for line in proc.stdout:
        if line.startswith("listening "):
            host, _, p = line.split()[2].rpartition(":")
            port = int(p)
        if line.strip() == "READY":
            return proc, host, port
    raise RuntimeError(f"server exited early: {cmd}")


def run_load(host: str, port: int, conns: int, seconds: float) -> dict[str, object]:
    out = subprocess.run([PY, "-m", "bench.loadgen", host, str(port), str(conns), str(seconds)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def count_rows(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@dataclass
class Server:
    """One server under test: how to start it and where it stores what it ACKs."""

    label: str
    cmd: list[str]
    db: Path
    table: str
    results: list[dict[str, object]] = field(default_factory=list)
    acked: int = 0


def bench_servers(servers: list[Server], conns: list[int], seconds: float) -> None:
    """Run every load against each server in turn, so that both meet the same machine.

    The servers are interleaved per connection count (rather than one after the other), and
    each run starts after a pause that lets the previous server finish its background work.
    """
    procs = []
    try:
        addrs = []
        for server in servers:
            proc, host, port = start_server(server.cmd)
            procs.append(proc)
            addrs.append((host, port))
        for n in conns:
            for server, (host, port) in zip(servers, addrs, strict=True):
                time.sleep(SETTLE_SECS)
                r = run_load(host, port, n, seconds)
                codes = r["codes"]
                assert isinstance(codes, dict)
                server.acked += int(codes.get("AA", 0)) + int(codes.get("CA", 0))
                r["server"] = server.label
                server.results.append(r)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    for server in servers:
        stored = count_rows(server.db, server.table)
        for r in server.results:
            r["durable"] = stored >= server.acked


def engine_config(tmp: Path) -> Path:
    cfg = tmp / "bench.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp / 'engine.db'}"
[[channel]]
name = "bench-in"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
accept = ["ORM^O01"]
""")
    return cfg


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"{'server':12} {'conns':>5} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'messages':>9}"
          f" {'durable':>8}")
    for r in rows:
        print(f"{r['server']:12} {r['connections']:>5} {float(r['rate']):>9.0f}"  # type: ignore[arg-type]
              f" {float(r['p50_ms']):>8.2f} {float(r['p99_ms']):>8.2f}"  # type: ignore[arg-type]
              f" {r['messages']:>9} {'yes' if r['durable'] else 'NO':>8}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", default="1,8,64")
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="radbridge-bench-") as d:
        tmp = Path(d)
        ours = Server("radbridge", [PY, "-m", "engine.cli", "run", str(engine_config(tmp)),
                                    "--log-level", "WARNING"], tmp / "engine.db", "messages")
        ref = Server("reference", [PY, "-m", "bench.bare_server", str(tmp / "ref.db")],
                     tmp / "ref.db", "m")
        bench_servers([ours, ref], conns, args.seconds)
    print_table(ours.results + ref.results)
    print()
    for a, b in zip(ours.results, ref.results, strict=True):
        ratio = float(a["rate"]) / float(b["rate"])  # type: ignore[arg-type]
        print(f"ratio radbridge/reference at {a['connections']:>2} connections: {ratio:.2f}")
    ok = all(r["durable"] for r in ours.results + ref.results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
