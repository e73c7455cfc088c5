"""Benchmark: durable MLLP ingest, radbridge beside the bare asyncio+SQLite reference.

    .venv/bin/python -m bench.mllp_ingest [--seconds 5] [--connections 1,8,64]

Each server runs in its own process, the load generator in another. Every
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
from pathlib import Path

PY = sys.executable


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


def bench_server(label: str, cmd: list[str], db: Path, table: str, conns: list[int],
                 seconds: float) -> list[dict[str, object]]:
    proc, host, port = start_server(cmd)
    results = []
    try:
        acked_total = 0
        for n in conns:
            r = run_load(host, port, n, seconds)
            codes = r["codes"]
            assert isinstance(codes, dict)
            acked_total += int(codes.get("AA", 0)) + int(codes.get("CA", 0))
            r["server"] = label
            results.append(r)
    finally:
        proc.terminate()
        proc.wait(30)
    stored = count_rows(db, table)
    for r in results:
        r["durable"] = stored >= acked_total
    return results


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
        ours = bench_server("radbridge", [PY, "-m", "engine.cli", "run",
                                          str(engine_config(tmp)), "--log-level", "WARNING"],
                            tmp / "engine.db", "messages", conns, args.seconds)
        ref = bench_server("reference", [PY, "-m", "bench.bare_server", str(tmp / "ref.db")],
                           tmp / "ref.db", "m", conns, args.seconds)
    print_table(ours + ref)
    print()
    for a, b in zip(ours, ref, strict=True):
        ratio = float(a["rate"]) / float(b["rate"])  # type: ignore[arg-type]
        print(f"ratio radbridge/reference at {a['connections']:>2} connections: {ratio:.2f}")
    ok = all(r["durable"] for r in ours + ref)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
