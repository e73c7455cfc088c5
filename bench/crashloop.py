"""Crash harness: SIGKILL `radbridge run` at random moments under load, restart, verify.

    .venv/bin/python -m bench.crashloop [--kills 100] [--senders 4] [--seed 1]

Senders resend whatever did not get an ACK (as a real RIS does). At the end it
checks that every ACKed message is in the store and reached the downstream
listener at least once, and that every stored message reached a final status
(none left RECEIVED or QUEUED once the engine has caught up); it prints kills,
messages checked, lost, duplicated, unfinished. Duplicates are expected only for
messages in flight at a kill.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.hl7gen import adt_a01
from channels.mllp.client import MLLPClient
from engine.errors import TransientDeliveryError
from mappings.hl7v2.ack import read_ack
from tests.fixtures.peers import HL7Sink


@dataclass
class CrashReport:
    kills: int = 0
    acked: set[str] = field(default_factory=set)
    lost_downstream: int = 0
    missing_in_store: int = 0
    duplicates: int = 0
    resent: int = 0
    unfinished: int = 0  # stored messages still RECEIVED or QUEUED after the drain

    def row(self) -> str:
        return (f"kills {self.kills}  messages checked {len(self.acked)}  lost "
                f"{self.lost_downstream + self.missing_in_store}  duplicated {self.duplicates}  "
                f"resent after a kill {self.resent}  unfinished {self.unfinished}")


class EngineUnderTest:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.address: tuple[str, int] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", "run", str(self.config), "--log-level", "ERROR",
            stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode():
            if line.startswith("listening ris "):
                host, _, port = line.split()[2].rpartition(":")
                self.address = (host, int(port))
            if line.strip() == "READY":
                self.ready.set()
                return
        raise RuntimeError("radbridge run exited before READY")

    async def kill(self) -> None:
        self.ready.clear()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        self.ready.clear()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def _sender(n: int, engine: EngineUnderTest, report: CrashReport, stop: asyncio.Event,
                  count: int) -> None:
    for i in range(count):
        cid = f"S{n}-{i}"
        tried = False
        while True:
            await engine.ready.wait()
            assert engine.address is not None
            client = MLLPClient(*engine.address, ack_timeout=5, connect_timeout=2)
            try:
                code, acked, _ = read_ack(await client.send(adt_a01(cid, patient_id=f"P{n}")))
                if code == "AA" and acked == cid:
                    report.acked.add(cid)
                    break
            except TransientDeliveryError:
                report.resent += 1 if not tried else 0
                tried = True
                await asyncio.sleep(0.05)
            finally:
                await client.close()
        if stop.is_set():
            return


async def _killer(engine: EngineUnderTest, report: CrashReport, kills: int,
                  rnd: random.Random) -> None:
    for _ in range(kills):
        await asyncio.sleep(rnd.uniform(0.1, 0.6))
        await engine.kill()
        report.kills += 1
        await engine.start()


def _unfinished(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM messages "
                                "WHERE status IN ('RECEIVED', 'QUEUED')").fetchone()[0])
    finally:
        conn.close()


async def _settle(db: Path, polls: int = 300) -> int:
    """Wait (0.2 s a poll) for every stored message to reach a final status; the number
    still unfinished."""
    for _ in range(polls):
        if not (left := _unfinished(db)):
            return 0
        await asyncio.sleep(0.2)
    return left


def _stored_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT control_id FROM messages")}
    finally:
        conn.close()


async def crash_loop(kills: int, senders: int = 4, seed: int = 1,
                     workdir: Path | None = None) -> CrashReport:
    rnd = random.Random(seed)
    report = CrashReport()
    with tempfile.TemporaryDirectory(prefix="radbridge-crash-") as tmp:
        base = workdir or Path(tmp)
        sink = HL7Sink()
        await sink.start()
        cfg = base / "crash.toml"
        cfg.write_text(f"""
[store]
url = "sqlite:///{base / 'crash.db'}"
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["downstream"]
[[channel]]
name = "downstream"
destination = {{ type = "mllp", endpoint = "{sink.endpoint}", retry_initial_secs = 0.05 }}
""")
        engine = EngineUnderTest(cfg)
        await engine.start()
        stop = asyncio.Event()
        load = [asyncio.create_task(_sender(n, engine, report, stop, 10_000_000))
                for n in range(senders)]
        await _killer(engine, report, kills, rnd)
        stop.set()
        await asyncio.gather(*load)
        await _drain(sink, report)
        report.unfinished = await _settle(base / "crash.db")
        await engine.stop()
        await sink.stop()
        report.missing_in_store = len(report.acked - _stored_ids(base / "crash.db"))
    return report


async def _drain(sink: HL7Sink, report: CrashReport, wait_secs: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + wait_secs
    while not report.acked <= set(sink.control_ids):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    received = set(sink.control_ids)
    report.lost_downstream = len(report.acked - received)
    report.duplicates = len(sink.control_ids) - len(received)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    report = asyncio.run(crash_loop(args.kills, args.senders, args.seed))
    print(report.row())
    return 0 if report.lost_downstream + report.missing_in_store + report.unfinished == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
