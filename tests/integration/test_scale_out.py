"""Two real ``radbridge run`` processes on one PostgreSQL database: one is SIGKILLed in the
middle of the load, the other takes its claimed work over once the leases run out, and
nothing that was ACKed is lost or sent out of order for its patient."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from bench.hl7gen import adt_a01
from channels.mllp.client import MLLPClient
from engine.errors import DeliveryError
from mappings.hl7v2.ack import read_ack
from tests.conftest import EngineProcess, wait_for
from tests.fixtures.peers import HL7Sink
from tests.integration.test_forwarding import forwarding

PATIENTS = 12
PER_PATIENT = 25
LEASE_SECS = 2


class Sender:
    """One patient's messages, one at a time, each sent again elsewhere until it is ACKed."""

    def __init__(self, patient: int, engines: list[EngineProcess]) -> None:
        self.patient = f"MRN{patient:03d}"
        self.engines = engines
        self.prefer = patient % len(engines)
        self.acked: list[str] = []

    async def run(self) -> None:
        client: MLLPClient | None = None
        for n in range(PER_PATIENT):
            cid = f"{self.patient}-{n:03d}"
            while True:
                engine = self.engines[self.prefer]
                if client is None:
                    client = MLLPClient(*engine.addresses["ris"], ack_timeout=5)
                try:
                    if read_ack(await client.send(adt_a01(cid, patient_id=self.patient)))[0] \
                            == "AA":
                        self.acked.append(cid)
                        break
                except DeliveryError:  # the engine died under us: the other one gets it
                    pass
                await client.close()
                client = None
                self.prefer = (self.prefer + 1) % len(self.engines)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.01)
        if client is not None:
            await client.close()


async def test_a_killed_engine_loses_nothing_and_keeps_order_per_patient(
        tmp_path: Path, pg_url: str, sink: HL7Sink, engine_process: Any) -> None:
    cfg = tmp_path / "scale.toml"
    cfg.write_text(forwarding(f"{pg_url}&lease_secs={LEASE_SECS}", sink.endpoint))
    sink.answer = "silent"  # the EHR hangs: both engines hold deliveries they cannot finish
    engines = [engine_process(cfg), engine_process(cfg)]
    for e in engines:
        await asyncio.to_thread(e.start)
    conn = await asyncpg.connect(pg_url)
    try:
        senders = [Sender(p, engines) for p in range(PATIENTS)]
        load = asyncio.gather(*(s.run() for s in senders))
        await wait_for(lambda: sum(len(s.acked) for s in senders) >= PATIENTS * PER_PATIENT // 3,
                       timeout=60)
        holders: list[int] = []

        async def holds_deliveries() -> bool:
            # Whichever engine claimed the queue first holds it (its worker re-reads its head
            # while the EHR hangs): the doomed one is an engine that holds deliveries now.
            for i, e in enumerate(engines):
                assert e.proc is not None
                if await conn.fetchval("SELECT count(*) FROM deliveries WHERE claimed_by"
                                       " LIKE $1 AND status = 'QUEUED'", f"%:{e.proc.pid}:%"):
                    holders.append(i)
                    return True
            return False

        await wait_for(holds_deliveries, timeout=30)
        victim = engines[holders[0]]
        assert victim.proc is not None
        doomed = f"%:{victim.proc.pid}:%"
        victim.kill()  # SIGKILL mid-load: its claims stay behind until their leases run out
        left = await conn.fetchval("SELECT count(*) FROM deliveries WHERE claimed_by LIKE $1"
                                   " AND status = 'QUEUED'", doomed)
        assert left > 0
        sink.answer = "AA"  # the EHR is back; only the survivor can send what the dead one held
        await asyncio.wait_for(load, 120)
        await _check(conn, senders, sink)
    finally:
        await conn.close()


async def _check(conn: asyncpg.Connection, senders: list[Sender], sink: HL7Sink) -> None:
    acked = [cid for s in senders for cid in s.acked]
    assert len(acked) == PATIENTS * PER_PATIENT
    await wait_for(lambda: set(acked) <= set(sink.control_ids), timeout=60)

    for s in senders:  # first arrival of each message at the sink, per patient
        firsts = list(dict.fromkeys(c for c in sink.control_ids if c.startswith(s.patient)))
        assert [c for c in firsts if c in s.acked] == s.acked, s.patient

    async def settled() -> bool:
        return not await conn.fetchval("SELECT count(*) FROM messages WHERE status NOT IN"
                                       " ('SENT', 'ERROR', 'FILTERED')")

    await wait_for(settled, timeout=30)
    rows = await conn.fetch("SELECT control_id, status FROM messages")
    stored = {r[0] for r in rows if r[1] == "SENT"}
    assert set(acked) <= stored  # every ACKed message is stored and SENT
    assert {r[1] for r in rows} == {"SENT"}
    assert not await conn.fetchval("SELECT count(*) FROM deliveries WHERE claimed_by IS NOT NULL")
