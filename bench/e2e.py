"""Benchmark: the shipped channels.toml end to end, beside each store's bare reference.

    .venv/bin/python -m bench.e2e [--seconds 5] [--connections 1,8,64]
                                  [--stores sqlite,postgresql] [--patients 4000]
                                  [--pipeline-workers shipped,0] [--hostile]

Runs the repository's ``channels.toml`` as shipped (orders mapped, archived, the analyst
steps it carries), copied to a temporary directory with only its ports (free ones), its
``data_dir`` and its store URL rewritten (SQLite: a file in the temporary directory;
PostgreSQL: ``postgresql://127.0.0.1:5432/test`` on a fresh schema), and ``ehr-results`` added
to ``ris-orders``' ``forward_to`` with an MLLP EHR sink (``bench.ehr_sink``) behind it, so an
MLLP destination is exercised. Each server runs in its own process, the load generator
(``bench.loadgen --mixed``: ADT^A01, ORM^O01, ADT^A08, OMI^O23 over several thousand patients)
in another; for each connection count the engine's run (load, then the drain until every
message is final) alternates with the store's bare reference (``bench.bare_server``,
``bench.bare_pg_server``: group commit before each ACK), so that both meet the same machine.

``--pipeline-workers`` runs the engine once per value (``shipped``: as channels.toml says,
i.e. the default, one worker process per CPU less one; ``0``: the pipeline in threads of the
engine's own process, as before issue 15; a number: that many worker processes), each
against the same reference, so a before/after comparison meets the same machine.
``--hostile`` adds, for each engine, a run at the highest connection count during which
another sender sends one 5 MB message of 200,000 segments (over ``[engine] max_segments``:
it must end ERROR without delaying the others' ACKs); its row is marked ``+H``.

Prints, per store and connection count: ingest msg/s and ACK p50/p99 while the pipeline runs;
end-to-end msg/s (first send to the last message final); CPU seconds of the engine (its
process tree; of that its own process, ``main``, and of that its main thread, the event loop;
the rest, ``wrk``, is the pipeline's worker processes), the load generator and the sink over
the run; the event loop's share of the engine's CPU and how busy it was (``loop busy``: its CPU
seconds over the run's wall seconds: near 100% the loop is the bottleneck); the engine's peak
RSS; and the ratios to the reference. At the end it checks that every ACKed message is
stored, final, reached the sink, and did so in order per patient.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.hl7gen import orm_o01
from bench.loadgen import patient_of
from channels.mllp.framing import frame
from engine.store.base import FINAL_STATUSES

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
PG_BASE = "postgresql://127.0.0.1:5432/test"
SETTLE_SECS = 1.0
POLL_SECS = 0.2
TICK = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    """A server started for the bench, with the addresses it printed before READY."""

    popen: subprocess.Popen[str]
    listeners: dict[str, tuple[str, int]]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
        self.popen.wait(60)


def start(cmd: list[str], cwd: Path | None = None, src: Path = ROOT) -> Proc:
    """Start *cmd* (its code from the source tree *src*) and wait for its READY line; its
    ``listening NAME HOST:PORT`` lines kept."""
    env = dict(os.environ, PYTHONPATH=str(src))
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
    assert popen.stdout is not None
    listeners: dict[str, tuple[str, int]] = {}
    for line in popen.stdout:
        if line.startswith("listening "):
            _, name, addr = line.split()
            host, _, port = addr.rpartition(":")
            listeners[name] = (host, int(port))
        if line.strip() == "READY":
            return Proc(popen, listeners)
    raise RuntimeError(f"server exited early ({popen.wait()}): {' '.join(cmd)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(path: str) -> list[str]:
    """The fields of a /proc stat file after the command name (field 3 onwards)."""
    text = Path(path).read_text()
    return text[text.rindex(")") + 2 :].split()


def _tree(pid: int) -> list[int]:
    """*pid* and its descendants (worker processes count as the engine's)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            continue
    return out


def cpu_seconds(pid: int, *, thread: int | None = None, alone: bool = False) -> float:
    """CPU seconds (user + system) of *pid*'s process tree, of *pid* alone (all its threads),
    or of one of its threads."""
    if thread is not None:
        paths = [f"/proc/{pid}/task/{thread}/stat"]
    else:
        paths = [f"/proc/{p}/stat" for p in ([pid] if alone else _tree(pid))]
    total = 0
    for path in paths:
        try:
            f = _stat(path)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of *pid*'s process tree so far, in MiB."""
    kb = 0
    for p in _tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        kb += int(m.group(1)) if m else 0
    return kb / 1024


# -- stores ------------------------------------------------------------------------------------

PENDING_SQL = (
    "SELECT (SELECT count(*) FROM messages WHERE status IN ('RECEIVED', 'QUEUED'))"
    " + (SELECT count(*) FROM deliveries WHERE status = 'QUEUED')"
)
ROWS_SQL = "SELECT control_id, status, id FROM messages WHERE channel = 'ris-orders'"


class SqliteProbe:
    """Reads the engine's and the reference's SQLite files from outside."""

    label = "sqlite"

    def __init__(self, tmp: Path) -> None:
        self.engine_db, self.ref_db = tmp / "var" / "radbridge.db", tmp / "ref.db"
        self.url = f"sqlite:///{self.engine_db}"
        self.ref_cmd = [PY, "-m", "bench.bare_server", str(self.ref_db)]

    def _query(self, db: Path, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(db, timeout=60)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def pending(self) -> int:
        return int(self._query(self.engine_db, PENDING_SQL)[0][0])

    def rows(self) -> list[tuple[Any, ...]]:
        return self._query(self.engine_db, ROWS_SQL)

    def ref_count(self) -> int:
        return int(self._query(self.ref_db, "SELECT count(*) FROM m")[0][0])

    def close(self) -> None:
        pass


class PostgresProbe:
    """A fresh schema on the local PostgreSQL for the engine and one for the reference."""

    label = "postgresql"

    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(4)
        self.schemas = (f"rb_e2e_{tag}", f"rb_e2e_ref_{tag}")
        for s in self.schemas:
            self._run(f"CREATE SCHEMA {s}")
        self.url = f"{PG_BASE}?search_path={self.schemas[0]}"
        self.ref_cmd = [
            PY,
            "-m",
            "bench.bare_pg_server",
            f"{PG_BASE}?search_path={self.schemas[1]}",
        ]

    def _run(self, sql: str, schema: str | None = None) -> list[Any]:
        async def go() -> list[Any]:
            import asyncpg

            settings = {"search_path": schema} if schema else {}
            conn = await asyncpg.connect(PG_BASE, server_settings=settings)
            try:
                return list(await conn.fetch(sql))
            finally:
                await conn.close()

        return asyncio.run(go())

    def pending(self) -> int:
        return int(self._run(PENDING_SQL, self.schemas[0])[0][0])

    def rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(ROWS_SQL, self.schemas[0])]

    def ref_count(self) -> int:
        return int(self._run("SELECT count(*) FROM m", self.schemas[1])[0][0])

    def close(self) -> None:
        for s in self.schemas:
            self._run(f"DROP SCHEMA IF EXISTS {s} CASCADE")


Probe = SqliteProbe | PostgresProbe


# -- the shipped configuration -----------------------------------------------------------------


def shipped_config(tmp: Path, store_url: str, sink_port: int, workers: str = "shipped") -> Path:
    """channels.toml as shipped, with only ports, data_dir and the store URL rewritten, and
    ``ehr-results`` added to ``ris-orders``' forward_to (its endpoint: the sink); *workers*
    other than ``shipped`` sets ``[engine] pipeline_workers``."""
    text = (ROOT / "channels.toml").read_text()

    def sub(pattern: str, repl: Any, count: int = 0) -> None:
        nonlocal text
        text, n = re.subn(pattern, repl, text, count=count, flags=re.M)
        if n == 0:
            raise RuntimeError(f"channels.toml has changed: nothing matches {pattern!r}")

    sub(r'^url = "sqlite:///[^"]*"', f'url = "{store_url}"', 1)
    sub(r'^data_dir = "[^"]*"', f'data_dir = "{tmp / "var"}"', 1)
    sub(r'^forward_to = \["order-archive"\]', 'forward_to = ["order-archive", "ehr-results"]', 1)
    sub(r'endpoint = "127\.0\.0\.1:6661"', f'endpoint = "127.0.0.1:{sink_port}"', 1)
    sub(r'listen = "127\.0\.0\.1:\d+"', lambda _m: f'listen = "127.0.0.1:{free_port()}"')
    if workers != "shipped":
        sub(r"^\[engine\]$", f"[engine]\npipeline_workers = {int(workers)}", 1)
    (tmp / "var").mkdir(exist_ok=True)
    shutil.copytree(ROOT / "lookups", tmp / "lookups", dirs_exist_ok=True)  # its lookup tables
    path = tmp / f"channels-{workers}.toml"
    path.write_text(text)
    return path


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One load against one server, and what it cost."""

    store: str
    server: str
    prefix: str
    load: dict[str, Any]
    hostile: str = ""  # the hostile message's answer and final status, when one was sent
    e2e_rate: float = float("nan")
    drain_s: float = float("nan")
    wall_s: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)
    rss_mb: float = float("nan")

    @property
    def acked(self) -> int:
        return int(sum(self.load["acked"]))


def run_load(
    addr: tuple[str, int], conns: int, seconds: float, patients: int, prefix: str
) -> dict[str, Any]:
    out = subprocess.run(
        [
            PY,
            "-m",
            "bench.loadgen",
            addr[0],
            str(addr[1]),
            str(conns),
            str(seconds),
            "--mixed",
            str(patients),
            "--prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def drain(probe: Probe, limit: float) -> float:
    """Poll until no message waits; the wall time it happened (or the limit passed)."""
    end = time.time() + limit
    while time.time() < end:
        if probe.pending() == 0:
            return time.time()
        time.sleep(POLL_SECS)
    return float("nan")


HOSTILE_SEGMENTS = 200_000  # about 5 MB: over [engine] max_segments (50,000)


class HostileSender(threading.Thread):
    """Sends one huge message after *delay* seconds on its own connection; keeps its answer
    (MSA-1) and how long the ACK took."""

    def __init__(self, addr: tuple[str, int], control_id: str, delay: float) -> None:
        super().__init__(daemon=True)
        self.addr, self.control_id, self.delay = addr, control_id, delay
        self.answer, self.ack_s, self.size = "none", float("nan"), 0

    def run(self) -> None:
        payload = orm_o01(self.control_id) + b"".join(
            b"\rNTE|%d||hostile line of text" % i for i in range(HOSTILE_SEGMENTS))
        self.size = len(payload)
        time.sleep(self.delay)
        # From another loopback address: the load already holds the per-peer connection limit.
        with socket.create_connection(self.addr, 120, ("127.0.0.2", 0)) as sock:
            t0 = time.perf_counter()
            sock.sendall(frame(payload))
            got = b""
            while not got.endswith(b"\x1c\r"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.ack_s = time.perf_counter() - t0
        msa = got.find(b"\rMSA|")
        self.answer = got[msa + 5 : msa + 7].decode() if msa >= 0 else "none"


def engine_run(
    probe: Probe, engine: Proc, sink: Proc, conns: int, args: argparse.Namespace, prefix: str,
    label: str, hostile: bool = False,
) -> Run:
    before = {
        "engine": cpu_seconds(engine.pid),
        "main": cpu_seconds(engine.pid, alone=True),
        "loop": cpu_seconds(engine.pid, thread=engine.pid),
        "sink": cpu_seconds(sink.pid),
    }
    sender = None
    if hostile:
        sender = HostileSender(engine.listeners["ris-orders"], f"HOSTILE{prefix}",
                               args.seconds / 3)
        sender.start()
    load = run_load(engine.listeners["ris-orders"], conns, args.seconds, args.patients, prefix)
    done = drain(probe, args.drain_limit)
    run = Run(probe.label, label, prefix, load)
    run.drain_s = done - (load["start_wall"] + load["seconds"])
    run.wall_s = done - load["start_wall"]
    run.e2e_rate = run.acked / run.wall_s
    after = {"engine": cpu_seconds(engine.pid), "main": cpu_seconds(engine.pid, alone=True),
             "loop": cpu_seconds(engine.pid, thread=engine.pid), "sink": cpu_seconds(sink.pid)}
    run.cpu = {k: after[k] - before[k] for k in after}
    run.cpu["workers"] = run.cpu["engine"] - run.cpu["main"]
    run.cpu["loadgen"] = load["cpu_s"]
    run.rss_mb = peak_rss_mb(engine.pid)
    if sender is not None:
        sender.join(120)
        final = {cid: (status, mid) for cid, status, mid in probe.rows()}.get(sender.control_id)
        run.hostile = (f"{sender.size / 1e6:.1f} MB message: {sender.answer} in "
                       f"{sender.ack_s * 1000:.0f} ms, final {final[0] if final else 'not stored'}")
    return run


def ref_run(probe: Probe, ref: Proc, conns: int, args: argparse.Namespace, prefix: str) -> Run:
    before = cpu_seconds(ref.pid)
    load = run_load(ref.listeners["ref"], conns, args.seconds, args.patients, prefix)
    run = Run(probe.label, "reference", prefix, load)
    run.cpu = {"engine": cpu_seconds(ref.pid) - before, "loadgen": load["cpu_s"]}
    run.rss_mb = peak_rss_mb(ref.pid)
    return run


def engine_label(workers: str) -> str:
    return "radbridge" if workers == "shipped" else f"rb w={workers}"


def bench_store(
    probe: Probe, tmp: Path, conns: list[int], args: argparse.Namespace
) -> tuple[list[Run], list[str]]:
    """Every connection count on one store: for each engine variant (``--pipeline-workers``)
    its runs, each followed by the reference's at the same count; then the hostile runs."""
    sink_out = tmp / "sink.txt"
    procs: list[Proc] = []
    runs: list[Run] = []
    variants = args.pipeline_workers.split(",")
    try:
        sink = start([PY, "-m", "bench.ehr_sink", str(sink_out)])
        procs.append(sink)
        ref = start(probe.ref_cmd)
        procs.append(ref)
        for v, workers in enumerate(variants):
            cfg = shipped_config(tmp, probe.url, sink.listeners["sink"][1], workers)
            cmd = [PY, "-m", "engine.cli", "run", str(cfg), "--log-level", "WARNING"]
            engine = start(cmd, cwd=tmp)
            try:
                for i, n in enumerate(conns):
                    time.sleep(SETTLE_SECS)
                    prefix = f"{'ABCDEFGH'[v]}{'ABCDEFGH'[i]}"
                    runs.append(engine_run(probe, engine, sink, n, args, prefix,
                                           engine_label(workers)))
                    time.sleep(SETTLE_SECS)
                    runs.append(ref_run(probe, ref, n, args, prefix.lower()))
                if args.hostile:
                    time.sleep(SETTLE_SECS)
                    runs.append(engine_run(probe, engine, sink, conns[-1], args,
                                           f"{'ABCDEFGH'[v]}H", engine_label(workers), True))
            finally:
                engine.stop()
    finally:
        for proc in reversed(procs):
            proc.stop()
    problems = check(probe, [r for r in runs if r.server != "reference"], sink_out)
    ref_acked = sum(r.acked for r in runs if r.server == "reference")
    if probe.ref_count() < ref_acked:
        problems.append(f"{probe.label} reference: {ref_acked} ACKed, fewer stored")
    return runs, problems


# -- the checks --------------------------------------------------------------------------------


def check(probe: Probe, runs: list[Run], sink_out: Path) -> list[str]:
    """Every ACKed message stored and final, at the sink, and in order per patient (store ids
    and sink arrival both follow each patient's send order)."""
    rows = {cid: (status, mid) for cid, status, mid in probe.rows()}
    arrived: dict[str, int] = {}
    sink_lines = sink_out.read_text().split() if sink_out.exists() else []
    for i, line in enumerate(sink_lines):
        arrived.setdefault(line, i)
    problems: list[str] = []
    dup = len(sink_lines) - len(arrived)
    for run in runs:
        missing = not_final = not_sunk = disorder = 0
        statuses: Counter[str] = Counter()
        last: dict[str, tuple[int, int]] = defaultdict(lambda: (-1, -1))
        conns = len(run.load["acked"])
        for c, acked in enumerate(run.load["acked"]):
            for n in range(1, acked + 1):
                cid = f"{run.prefix}{c:03d}{n:015d}"
                if cid not in rows:
                    missing += 1
                    continue
                status, mid = rows[cid]
                statuses[status] += 1
                not_final += status not in FINAL_STATUSES
                pos = arrived.get(cid)
                not_sunk += pos is None
                patient = patient_of(c, n, conns, int(run.load["patients"]))
                prev_mid, prev_pos = last[patient]
                disorder += mid < prev_mid or (pos is not None and pos < prev_pos)
                last[patient] = (mid, pos if pos is not None else prev_pos)
        run.load["statuses"] = dict(statuses)
        run.load["check"] = (
            "ok"
            if not (missing or not_final or not_sunk or disorder)
            else f"missing {missing}, not final {not_final}, not at sink {not_sunk},"
            f" out of order {disorder}"
        )
        if run.load["check"] != "ok":
            problems.append(
                f"{run.store} {run.load['connections']} connections: {run.load['check']}"
            )
    if dup:  # allowed (at-least-once after a lost ACK), but unexpected on loopback
        print(f"note: {probe.label}: the sink received {dup} messages twice", file=sys.stderr)
    return problems


# -- the table ---------------------------------------------------------------------------------


def _f(x: float, fmt: str) -> str:
    return "—" if x != x else format(x, fmt)  # NaN: not measured


def print_table(runs: list[Run]) -> None:
    print(
        f"{'store':10} {'server':10} {'conns':>5} {'ingest/s':>9} {'p50 ms':>7} {'p99 ms':>8}"
        f" {'e2e/s':>7} {'drain s':>7} {'cpu eng':>7} {'main':>6} {'(loop)':>6} {'wrk':>6}"
        f" {'loop %':>6} {'busy %':>6} {'cpu gen':>7} {'cpu sink':>8} {'RSS MB':>7}  check"
    )
    nan = float("nan")
    for r in runs:
        ld, c = r.load, r.cpu
        loop = c.get("loop", nan)
        share = 100 * loop / c["engine"] if c.get("engine") else nan
        busy = 100 * loop / r.wall_s if r.wall_s == r.wall_s else nan
        conns = f"{ld['connections']}{'+H' if r.hostile else ''}"
        print(
            f"{r.store:10} {r.server:10} {conns:>5} {ld['rate']:>9.0f}"
            f" {ld['p50_ms']:>7.1f} {ld['p99_ms']:>8.1f} {_f(r.e2e_rate, '.0f'):>7}"
            f" {_f(r.drain_s, '.1f'):>7} {c.get('engine', 0):>7.1f}"
            f" {_f(c.get('main', nan), '.1f'):>6} {_f(loop, '.1f'):>6}"
            f" {_f(c.get('workers', nan), '.1f'):>6} {_f(share, '.0f'):>6} {_f(busy, '.0f'):>6}"
            f" {c.get('loadgen', 0):>7.1f}"
            f" {_f(c.get('sink', nan), '.1f'):>8} {r.rss_mb:>7.0f}"
            f"  {ld.get('check', 'stored' if r.server == 'reference' else '?')}"
        )
    for r in runs:
        if r.hostile:
            print(f"  {r.store} {r.server} +H: {r.hostile}")


def print_ratios(runs: list[Run]) -> None:
    refs = {(r.store, r.load["connections"]): r for r in runs if r.server == "reference"}
    print()
    print(
        "ratios to the same store's reference at the same connection count (targets at 64"
        " connections: ingest >= 0.5, p99 <= 2x, end to end >= 0.25 of the reference's ingest)"
    )
    for a in runs:
        b = refs.get((a.store, a.load["connections"]))
        if a.server == "reference" or b is None:
            continue
        print(
            f"  {a.store:10} {a.server:10} {a.load['connections']:>3} connections"
            f"{' +H' if a.hostile else '   '}: ingest {a.load['rate'] / b.load['rate']:.2f}x,"
            f" p99 {a.load['p99_ms'] / b.load['p99_ms']:.1f}x,"
            f" end to end {a.e2e_rate / b.load['rate']:.2f}x"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="load per run (default 5)")
    ap.add_argument("--connections", default="1,8,64")
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--patients", type=int, default=4000, help="patient ids in the mixed feed")
    ap.add_argument(
        "--pipeline-workers",
        default="shipped",
        help="engine variants, comma-separated: shipped (channels.toml as is), 0 (threads, the"
        " pre-issue-15 pipeline) or a number of worker processes (default: shipped)",
    )
    ap.add_argument(
        "--hostile",
        action="store_true",
        help="add a run per engine with one 5 MB, 200,000-segment message among the load",
    )
    ap.add_argument(
        "--drain-limit",
        type=float,
        default=300.0,
        help="seconds to wait for every message to be final after a load",
    )
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    runs: list[Run] = []
    problems: list[str] = []
    for store in args.stores.split(","):
        with tempfile.TemporaryDirectory(prefix=f"radbridge-e2e-{store}-") as d:
            tmp = Path(d)
            probe: Probe = SqliteProbe(tmp) if store == "sqlite" else PostgresProbe(tmp)
            try:
                store_runs, store_problems = bench_store(probe, tmp, conns, args)
            finally:
                probe.close()
            runs += store_runs
            problems += store_problems
    print_table(runs)
    print_ratios(runs)
    print()
    for r in runs:
        if r.server != "reference":
            print(
                f"{r.store} {r.server} {r.load['connections']} connections: {r.acked} ACKed "
                f"({r.load['codes']}); final statuses {r.load.get('statuses')}"
            )
    print(
        "CPU: seconds over the run (load and drain): cpu eng is the engine's process tree, main"
        " its own process, (loop) of that its main thread (the event loop), wrk the pipeline's"
        " worker processes; loop %: the loop's share of the engine's CPU; busy %: the loop's CPU"
        " over the run's wall time. The PostgreSQL server's own CPU is not counted. RSS: the"
        " engine's peak so far (its processes summed)."
    )
    for p in problems:
        print(f"PROBLEM: {p}")
    print(
        "every ACKed message stored, final, at the sink, in order per patient:",
        "yes" if not problems else "NO",
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
