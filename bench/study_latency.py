"""Benchmark: study complete -> each result out, on the shipped channels.toml, idle and loaded.

    .venv/bin/python -m bench.study_latency [--studies 20] [--load-conns 8] [--trigger cm]

Runs the repository's ``channels.toml`` as shipped (``bench.e2e.shipped_config``: only ports,
``data_dir`` and the SQLite store rewritten, ``ehr-results`` fed by ``ris-orders`` with an
MLLP sink behind it), with ``ai-results`` also forwarding to three more destinations so that
every kind of result leaves: ``results-outbox`` (the shipped ORU^R01 file), ``ehr-oru``
(ORU^R01 over MLLP to the sink), ``fhir-out`` (the FHIR Bundle to a FHIR server,
``tests.fixtures.fhir_server``) and ``sr-out`` (the DICOM SR by C-STORE to dcmtk's
``storescp``). For each study it sends, as a RIS and a modality would, an ORM^O01 over MLLP,
one generated chest CR by C-STORE (``mappings.demo``), then completes the study on demand:
``--trigger cm`` sends the order's status update with ORC-5 ``CM`` (completed in the
orders pipeline's transaction), ``--trigger cli`` runs ``radbridge studies complete`` (a
store signal the engine reads every ``signal_poll_secs``). It waits for every result before
the next study.

Measured from the study's ``completed_at`` (the store's clock, as every time below) to: the
worklist update (written with the results), each destination's delivery SENT (the peer
answered), the last of them; model time subtracted: the forward passes the inference audit
records for the case (``inference_audit.forward_ms``, summed: the shipped models share one
device). Then the same with ``bench.loadgen``'s mixed feed (``bench.e2e``'s load) running on
``ris-orders`` over ``--load-conns`` connections. Prints p50/p95 per result and where the
time went (complete -> jobs queued -> inference final -> report stored -> results built), and
exits 1 if a study's results did not all arrive within ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.e2e import PY, ROOT, Proc, free_port, shipped_config, start
from engine.results.model import report_id_for
from mappings.demo import DemoIds

DESTINATIONS = {"results-outbox": "ORU file", "ehr-oru": "ORU MLLP", "fhir-out": "FHIR",
                "sr-out": "SR C-STORE"}
EXTRA_CHANNELS = """
[[channel]]
name = "ehr-oru"
destination = {{ type = "mllp", endpoint = "127.0.0.1:{sink}" }}

[[channel]]
name = "fhir-out"
destination = {{ type = "fhir_rest", base_url = "{fhir}" }}

[[channel]]
name = "sr-out"
destination = {{ type = "dicom", endpoint = "127.0.0.1:{scp}", called_ae = "SRSCP" }}
"""


def latency_config(tmp: Path, sink: int, fhir: str, scp: int, quiet_secs: float) -> Path:
    """The shipped configuration (``bench.e2e``) with every result destination fed, and
    ``pacs-in``'s quiet period shortened to *quiet_secs*."""
    path = shipped_config(tmp, f"sqlite:///{tmp / 'engine.db'}", sink)
    text = path.read_text()
    for pattern, repl in ((r'^forward_to = \["results-outbox"\]',
                           'forward_to = ["results-outbox", "ehr-oru", "fhir-out", "sr-out"]'),
                          (r"^study_quiet_secs = 30$", f"study_quiet_secs = {quiet_secs:g}")):
        text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
        if n != 1:
            raise RuntimeError(f"channels.toml has changed: nothing matches {pattern!r}")
    path.write_text(text + EXTRA_CHANNELS.format(sink=sink, fhir=fhir, scp=scp))
    return path


# -- one study through -------------------------------------------------------------------------


@dataclass
class Sample:
    """What the store shows of one study's way from complete to results (store clock).

    ``due``: when the study was complete: its ``completed_at``, or for a quiet-period study
    the moment its quiet period ran out (``last_at + quiet_secs``), which the assembler's
    sweep notices some time later (``completed_at``)."""

    phase: str
    due: float
    completed_at: float
    model_ms: float  # the forward passes
    preprocess_ms: float  # reading and preparing the images, summed over the models
    batch_ms: float  # the longest wait of a prepared study for its model's batch
    jobs_queued: float
    inference_final: float
    report_stored: float
    worklist: float
    sent: dict[str, float] = field(default_factory=dict)

    def after_complete(self, at: float) -> float:
        """Milliseconds from complete to *at*, model time taken out."""
        return (at - self.due) * 1000 - self.model_ms


class Probe:
    """Reads the engine's SQLite store (read-only) for one study's timestamps."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)

    def value(self, sql: str, *args: object) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def sample(self, study_uid: str, phase: str) -> Sample | None:
        """The study's sample once every result has left, else None."""
        case = self.conn.execute("SELECT c.id, c.revision, s.completed_at, s.last_at +"
                                 " s.quiet_secs FROM cases c JOIN studies s ON s.uid ="
                                 " c.study_uid WHERE c.study_uid = ?", (study_uid,)).fetchone()
        if case is None:
            return None
        case_id, revision, completed_at, quiet_end = case
        msg = self.conn.execute("SELECT id, received_at FROM messages WHERE channel ="
                                " 'ai-results' AND control_id = ?",
                                (report_id_for(case_id, revision),)).fetchone()
        if msg is None:
            return None
        sent = dict(self.conn.execute("SELECT destination, updated_at FROM deliveries WHERE"
                                      " message_id = ? AND status = 'SENT'", (msg[0],)).fetchall())
        if set(sent) != set(DESTINATIONS):
            return None
        jobs = self.conn.execute("SELECT min(created_at), max(updated_at) FROM inference_jobs"
                                 " WHERE case_id = ?", (case_id,)).fetchone()
        model = self.conn.execute("SELECT coalesce(sum(forward_ms), 0), coalesce(sum("
                                  "preprocess_ms), 0), coalesce(max(queue_ms), 0) FROM"
                                  " inference_audit WHERE case_id = ? AND status = 'ok'",
                                  (case_id,)).fetchone()
        worklist = self.value("SELECT updated_at FROM worklist WHERE case_id = ?", case_id)
        due = min(quiet_end, completed_at) if phase.endswith("quiet") else completed_at
        return Sample(phase, due, completed_at, float(model[0]), float(model[1]),
                      float(model[2]), jobs[0], jobs[1], msg[1], float(worklist or "nan"), sent)

    def orders_mapped(self, accessions: list[str]) -> bool:
        marks = ",".join("?" * len(accessions))
        found = self.value(f"SELECT count(*) FROM orders WHERE accession IN ({marks})",
                           *accessions)
        return found == len(accessions)

    def close(self) -> None:
        self.conn.close()


class Modality:
    """The RIS and the modality of the bench: orders first, then per study its image and
    its completion."""

    def __init__(self, engine: Proc, config: Path) -> None:
        self.engine, self.config = engine, config

    async def order(self, hl7: bytes) -> None:
        from channels.mllp.client import MLLPClient
        from mappings.hl7v2.ack import read_ack

        client = MLLPClient(*self.engine.listeners["ris-orders"], ack_timeout=60)
        try:
            code, _, reason = read_ack(await client.send(hl7))
        finally:
            await client.close()
        if code not in ("AA", "CA"):  # CA: the demo order asks for enhanced mode
            raise RuntimeError(f"order not accepted: {code} {reason}")

    async def orders(self, count: int) -> list[DemoIds]:
        """*count* new orders (ORM^O01, status SC), each for one chest radiograph."""
        from mappings.demo import demo_order

        ids = [DemoIds.new() for _ in range(count)]
        for one in ids:
            await self.order(demo_order(one))
        return ids

    async def image(self, part10: bytes) -> None:
        from channels.dicom.scu import StoreSCUConfig, StoreSCUDestination

        host, port = self.engine.listeners["pacs-in"]
        scu = StoreSCUDestination("bench", StoreSCUConfig.model_validate({
            "type": "dicom", "endpoint": f"{host}:{port}", "called_ae": "RADBRIDGE",
            "calling_ae": "BENCH_CR", "keep_open_secs": 0, "timeout_secs": 60}))
        try:
            await scu.send(part10)
        finally:
            await scu.close()

    async def study(self, ids: DemoIds, trigger: str) -> None:
        """The study's image, then its completion by *trigger* (``quiet``: none, wait)."""
        from mappings.demo import demo_chest_radiograph, demo_order

        await self.image(demo_chest_radiograph(ids))
        if trigger == "cm":  # the RIS says the exam is done: ORC-1 SC, ORC-5 CM
            update = demo_order(ids).replace(b"ORC|NW|", b"ORC|SC|").replace(b"||SC||",
                                                                             b"||CM||")
            await self.order(update.replace(ids.control_id.encode(),
                                            f"{ids.control_id}C".encode(), 1))
        elif trigger == "cli":
            await asyncio.to_thread(subprocess.run, [
                PY, "-m", "engine.cli", "studies", "complete", ids.study_uid, "--config",
                str(self.config)], check=True, capture_output=True, cwd=self.config.parent)


T = TypeVar("T")


async def poll(probe: Callable[[], T | None], limit: float, what: str) -> T:
    """Call *probe* until it answers; raises TimeoutError naming *what* after *limit* s."""
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {limit:g} s")
        await asyncio.sleep(0.05)


async def through(modality: Modality, probe: Probe, ids: DemoIds, trigger: str, phase: str,
                  limit: float) -> Sample:
    """One study from image to its last result; raises TimeoutError if it never got there."""
    await modality.study(ids, trigger)
    return await poll(lambda: probe.sample(ids.study_uid, f"{phase} {trigger}"), limit,
                      f"study {ids.study_uid}: every result out")


# -- the peers and the load --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def peers(tmp: Path) -> AsyncIterator[tuple[Proc, str, int]]:
    """The MLLP sink, a FHIR server and storescp, for the life of the bench."""
    from tests.fixtures.dicom import require
    from tests.fixtures.fhir_server import FhirTestServer

    sink = await asyncio.to_thread(start, [PY, "-m", "bench.ehr_sink", str(tmp / "sink.txt")])
    fhir = FhirTestServer()
    await fhir.start()
    port = free_port()
    (tmp / "sr").mkdir()
    scp = await asyncio.to_thread(
        subprocess.Popen, [require("storescp"), "-aet", "SRSCP", "-od", str(tmp / "sr"),
                           str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield sink, fhir.url, port
    finally:
        scp.terminate()
        await asyncio.to_thread(scp.wait, 30)
        await fhir.close()
        await asyncio.to_thread(stop, sink)


@contextlib.asynccontextmanager
async def load(engine: Proc, conns: int) -> AsyncIterator[None]:
    """``bench.loadgen``'s mixed feed (bench.e2e's load) on ``ris-orders`` while inside."""
    host, port = engine.listeners["ris-orders"]
    gen = await asyncio.to_thread(
        subprocess.Popen, [PY, "-m", "bench.loadgen", host, str(port), str(conns), "3600",
                           "--mixed", "4000", "--prefix", "Z"], stdout=subprocess.DEVNULL,
        cwd=ROOT)
    try:
        await asyncio.sleep(1.0)  # let the load reach its stride
        yield
    finally:
        gen.terminate()
        await asyncio.to_thread(gen.wait, 60)


def start_engine(cfg: Path, src: Path | None) -> Proc:
    """``radbridge run`` on *cfg*, from this source tree or *src* (an earlier commit's)."""
    return start([PY, "-m", "engine.cli", "run", str(cfg), "--log-level", "WARNING"],
                 cfg.parent, src if src is not None else ROOT)


def stop(proc: Proc) -> None:
    """Stop *proc*; killed if it has not stopped within a minute."""
    try:
        proc.stop()
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait(30)


# -- the table ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def columns(s: Sample) -> dict[str, float]:
    """Milliseconds after complete (model time out) per result, and the stages on the way."""
    out = {label: s.after_complete(s.sent[dest]) for dest, label in DESTINATIONS.items()}
    out["worklist"] = s.after_complete(s.worklist)
    out["all results"] = s.after_complete(max(s.sent.values()))
    out["(model ms)"] = s.model_ms
    out["(preprocess ms)"] = s.preprocess_ms
    out["(batch wait ms)"] = s.batch_ms
    out["(-> assembler completes)"] = (s.completed_at - s.due) * 1000
    out["(-> jobs queued)"] = (s.jobs_queued - s.due) * 1000
    out["(-> inference final)"] = s.after_complete(s.inference_final)
    out["(-> report stored)"] = s.after_complete(s.report_stored)
    return out


def print_table(samples: list[Sample]) -> None:
    phases = list(dict.fromkeys(s.phase for s in samples))
    print(f"{'ms after study complete':26}" + "".join(
        f"{p + ' p50':>18}{p + ' p95':>18}" for p in phases))
    names = list(columns(samples[0]))
    for name in names:
        cells = ""
        for p in phases:
            values = [columns(s)[name] for s in samples if s.phase == p]
            cells += f"{statistics.median(values):>18.0f}{pct(values, 0.95):>18.0f}"
        print(f"{name:26}{cells}")
    counts = ", ".join(f"{p}: {sum(s.phase == p for s in samples)}" for p in phases)
    print(f"\nstudies: {counts}. Model time (the forward passes) taken out of every result;"
          " the stages on the way in parentheses.")


async def run(args: argparse.Namespace, tmp: Path) -> list[Sample]:
    samples: list[Sample] = []
    async with peers(tmp) as (sink, fhir, scp):
        cfg = latency_config(tmp, sink.listeners["sink"][1], fhir, scp, args.quiet_secs)
        engine = await asyncio.to_thread(start_engine, cfg, args.engine_src)
        probe = Probe(tmp / "engine.db")
        try:
            modality = Modality(engine, cfg)
            per_phase = args.studies * len(args.triggers)
            ids = await modality.orders(args.warmup + 2 * per_phase)  # mapped before any load
            await poll(lambda: probe.orders_mapped([i.accession for i in ids]) or None,
                       args.timeout, "the orders mapped")
            todo = iter(ids)
            for _ in range(args.warmup):  # models loaded, associations and queues warm
                await through(modality, probe, next(todo), "cm", "warmup", args.timeout)
            for phase in ("idle", "loaded"):
                async with load(engine, args.load_conns) if phase == "loaded" \
                        else contextlib.nullcontext():
                    for trigger in args.triggers:
                        for _ in range(args.studies):
                            samples.append(await through(modality, probe, next(todo), trigger,
                                                         phase, args.timeout))
        finally:
            probe.close()
            await asyncio.to_thread(stop, engine)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=20, help="studies per phase (idle, loaded)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--load-conns", type=int, default=8)
    ap.add_argument("--triggers", default="cm,quiet",
                    type=lambda v: [t for t in v.split(",") if t in ("cm", "cli", "quiet")])
    ap.add_argument("--quiet-secs", type=float, default=2.0,
                    help="pacs-in's study_quiet_secs for the quiet trigger")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--engine-src", type=lambda v: Path(v).resolve(), default=None,
                    help="run the engine from this source tree (an earlier commit: before)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="radbridge-latency-") as d:
        try:
            samples = asyncio.run(run(args, Path(d)))
        except TimeoutError as exc:
            print(f"study_latency: {exc}", file=sys.stderr)
            return 1
    print_table(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
