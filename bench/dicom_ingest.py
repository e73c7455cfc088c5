"""Benchmark: durable DICOM ingest, radbridge beside a real Orthanc, one command.

    .venv/bin/python -m bench.dicom_ingest [--count 500] [--size 256] [--associations 1,4]
                                           [--stow-batch 50] [--stow-concurrency 2]
                                           [--repeat 3] [--compare-src DIR]

The same N synthetic CT slices (size x size, 16-bit, explicit VR little endian)
are sent by dcmtk's storescu (one association per process, 1 or more processes
in parallel) and by an aiohttp STOW-RS client (batches, a few requests in
flight) to a ``radbridge run`` process, and the same way to Orthanc (default
SQLite index, DICOMweb plugin). Every run starts a fresh server with an empty
store. After each run the bench counts what the server indexed. Prints
instances/s per run and radbridge's ratio to Orthanc (target >= 1.0).

``--repeat N`` runs every transfer N rounds, the servers taking turns within each round,
and prints the median (and range) of each: on a small shared machine single runs are
noise. ``--compare-src DIR`` also runs ``radbridge run`` from another source tree (a
``git worktree`` of an earlier commit, say) in the same rounds: before and after, beside
Orthanc, in one run.

radbridge fsyncs each instance file and commits its index row before it
answers; Orthanc is run with its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from pydicom.uid import generate_uid

from tests.fixtures.dicom import require, synth_instance, write
from tests.fixtures.orthanc import Orthanc

PY = sys.executable
BOUNDARY = "radbridge-bench"


def generate(count: int, size: int, out: Path) -> list[Path]:
    """*count* CT slices in 10-slice series of a few studies."""
    paths, study, series = [], generate_uid(), generate_uid()
    for i in range(count):
        if i % 100 == 0:
            study = generate_uid()
        if i % 10 == 0:
            series = generate_uid()
        ds = synth_instance(study, series, i + 1, rows=size, cols=size,
                            patient_id=f"BENCH{i // 100:03d}", accession=f"B{i // 100:05d}")
        paths.append(write(ds, out / f"{i:05d}.dcm"))
    return paths


class Radbridge:
    """``radbridge run`` with a DICOM and a DICOMweb source on free loopback ports; *src*:
    the source tree to run it from (default: this one, as imported)."""

    def __init__(self, tmp: Path, src: Path | None = None) -> None:
        self.tmp = tmp
        self.src = src
        self.proc: subprocess.Popen[str] | None = None
        self.addresses: dict[str, tuple[str, int]] = {}

    def __enter__(self) -> Radbridge:
        self.tmp.mkdir(parents=True, exist_ok=True)
        cfg = self.tmp / "bench.toml"
        cfg.write_text(f"""
[store]
url = "sqlite:///{self.tmp / 'engine.db'}"
[engine]
data_dir = "{self.tmp / 'data'}"
[[channel]]
name = "dimse"
source = {{ type = "dicom", ae_title = "RADBRIDGE", listen = "127.0.0.1:0" }}
[[channel]]
name = "web"
source = {{ type = "dicomweb", listen = "127.0.0.1:0", path_prefix = "/dicom-web" }}
""")
        env = None if self.src is None else dict(os.environ, PYTHONPATH=str(self.src))
        self.proc = subprocess.Popen([PY, "-m", "engine.cli", "run", str(cfg), "--log-level",
                                      "WARNING"], stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=self.src)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("listening "):
                _, name, addr = line.split()
                host, _, port = addr.rpartition(":")
                self.addresses[name] = (host, int(port))
            if line.strip() == "READY":
                return self
        raise RuntimeError("radbridge run exited before READY")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def indexed(self) -> int:
        conn = sqlite3.connect(self.tmp / "engine.db")
        try:
            return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])
        finally:
            conn.close()


def orthanc_indexed(server: Orthanc) -> int:
    with urllib.request.urlopen(f"{server.url}/statistics", timeout=30) as r:
        return int(json.loads(r.read())["CountInstances"])


def storescu(host: str, port: int, called: str, files: list[Path], parallel: int) -> float:
    """Send *files* over *parallel* storescu associations; seconds taken."""
    exe = require("storescu")
    shards = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [subprocess.Popen([exe, "-aet", "BENCH", "-aec", called, host, str(port),
                               *map(str, shard)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for shard in shards]
    for p in procs:
        _, err = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed ({p.returncode}): {err[-500:]!r}")
    return time.perf_counter() - start


def _body(paths: list[Path]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p.read_bytes() + b"\r\n" for p in paths) + \
        f"--{BOUNDARY}--\r\n".encode()


async def _stow(url: str, files: list[Path], batch: int, concurrency: int) -> float:
    bodies = [_body(files[i:i + batch]) for i in range(0, len(files), batch)]
    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as http:

        async def one(body: bytes) -> None:
            async with gate, http.post(url, data=body,
                                       headers={"Content-Type": ctype}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"STOW-RS answered {resp.status}")

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - start


def stow(url: str, files: list[Path], batch: int, concurrency: int) -> float:
    return asyncio.run(_stow(url, files, batch, concurrency))


@dataclass
class Row:
    """One transfer to one fresh server."""

    server: str
    how: str
    secs: float
    indexed: int
    count: int

    @property
    def rate(self) -> float:
        return self.count / self.secs


def run_radbridge(tmp: Path, files: list[Path], how: str, src: Path | None, label: str,
                  send: Callable[[dict[str, tuple[str, int]]], float]) -> Row:
    with Radbridge(tmp, src) as rb:
        secs = send(rb.addresses)
        indexed = rb.indexed()
    return Row(label, how, secs, indexed, len(files))


def run_orthanc(tmp: Path, files: list[Path], how: str,
                send: Callable[[Orthanc], float]) -> Row:
    server = Orthanc(tmp / "orthanc", aet="ORTHANC")
    server.start()
    try:
        secs = send(server)
        indexed = orthanc_indexed(server)
    finally:
        server.stop()
    return Row("orthanc", how, secs, indexed, len(files))


Sender = tuple[Callable[[dict[str, tuple[str, int]]], float], Callable[[Orthanc], float]]


def transfers(files: list[Path], args: argparse.Namespace) -> dict[str, Sender]:
    """Each transfer: how it reaches radbridge (its listeners) and how it reaches Orthanc."""
    out: dict[str, Sender] = {}
    for n in args.associations:
        def to_radbridge(a: dict[str, tuple[str, int]], n: int = n) -> float:
            host, port = a["dimse"]
            return storescu(host, port, "RADBRIDGE", files, n)

        def to_orthanc(o: Orthanc, n: int = n) -> float:
            return storescu("127.0.0.1", o.dicom_port, "ORTHANC", files, n)

        out[f"C-STORE x{n}"] = (to_radbridge, to_orthanc)

    def stow_radbridge(a: dict[str, tuple[str, int]]) -> float:
        host, port = a["web"]
        return stow(f"http://{host}:{port}/dicom-web/studies", files, args.stow_batch,
                    args.stow_concurrency)

    def stow_orthanc(o: Orthanc) -> float:
        return stow(f"{o.dicomweb}/studies", files, args.stow_batch, args.stow_concurrency)

    out[f"STOW {args.stow_batch}/req x{args.stow_concurrency}"] = (stow_radbridge, stow_orthanc)
    return out


def bench(files: list[Path], tmp: Path, args: argparse.Namespace) -> list[Row]:
    """Every transfer, ``args.repeat`` rounds, each server once per round (fresh, empty)."""
    servers: list[tuple[str, Path | None]] = [("radbridge", None)]
    if args.compare_src is not None:
        servers.append((f"radbridge@{args.compare_src.name}", args.compare_src))
    rows: list[Row] = []
    for how, (to_radbridge, to_orthanc) in transfers(files, args).items():
        for r in range(args.repeat):
            turns: list[Callable[[], Row]] = [
                functools.partial(run_radbridge, tmp / f"rb-{len(rows)}-{label}", files, how,
                                  src, label, to_radbridge) for label, src in servers]
            turns.append(functools.partial(run_orthanc, tmp / f"or-{len(rows)}", files, how,
                                           to_orthanc))
            for i in range(len(turns)):  # whoever went first goes last next round
                rows.append(turns[(i + r) % len(turns)]())
    return rows


def report(rows: list[Row], count: int) -> bool:
    """Per transfer and server: median inst/s over the rounds (and the range); then each
    radbridge's ratio to Orthanc (of the medians, and the range of per-round ratios)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.how, r.server), []).append(r)
    print(f"{'transfer':22} {'server':24} {'rounds':>6} {'median inst/s':>14} {'range':>13}"
          f" {'indexed':>8}")
    for (how, server), rs in groups.items():
        rates = [r.rate for r in rs]
        print(f"{how:22} {server:24} {len(rs):>6} {statistics.median(rates):>14.0f}"
              f" {min(rates):>6.0f}-{max(rates):<6.0f} {min(r.indexed for r in rs):>8}")
    print()
    for (how, server), rs in groups.items():
        if server == "orthanc":
            continue
        theirs = groups[(how, "orthanc")]
        ratio = statistics.median(r.rate for r in rs) / statistics.median(r.rate for r in theirs)
        per_round = [a.rate / b.rate for a, b in zip(rs, theirs, strict=True)]  # by round
        print(f"ratio {server + '/orthanc':32} {how:22} {ratio:5.2f}"
              f"  (per round {min(per_round):.2f}-{max(per_round):.2f})")
    return all(r.indexed == count for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--associations", default="1,4",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--stow-batch", type=int, default=50)
    ap.add_argument("--stow-concurrency", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds per transfer (medians)")
    ap.add_argument("--compare-src", type=lambda s: Path(s).resolve(), default=None,
                    help="also run radbridge from this source tree (before/after)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="radbridge-dicom-bench-") as d:
        tmp = Path(d)
        files = generate(args.count, args.size, tmp / "in")
        size = sum(p.stat().st_size for p in files) / len(files) / 1024
        print(f"{args.count} instances, {args.size}x{args.size}, {size:.0f} KiB each\n")
        ok = report(bench(files, tmp, args), args.count)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
