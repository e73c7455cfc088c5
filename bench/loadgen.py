"""MLLP load generator: N connections, one message in flight each, ACK latency recorded.

Runs in its own process (``python -m bench.loadgen HOST PORT CONNS SECONDS [--mixed PATIENTS]
[--prefix P]``) and prints one JSON line: messages, seconds, ACK codes, latency percentiles,
messages ACKed per connection, its own CPU seconds and its start time.

By default every message is the same ORM^O01. ``--mixed PATIENTS`` sends the mixed feed
(ADT^A01, ORM^O01, ADT^A08, OMI^O23 per patient, see ``bench.hl7gen.MIXED_CYCLE``) over
PATIENTS patient ids, each patient sent on one connection only, so its messages go one after
the other: ACK before the next. The control id of connection C's Nth message is
``{P}{C:03d}{N:015d}`` (``P`` is ``--prefix``, ``L`` by default), from which the patient and
message type follow (:func:`patient_of`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import resource
import time
from collections import Counter
from typing import cast

from bench.hl7gen import MIXED_CYCLE, mixed_templates, orm_o01
from channels.mllp.framing import Frame, MLLPFramer, frame

_CONTROL, _PATIENT = "CTRLID_PLACEHOLDER_", "PATIENTPH"
_TEMPLATE = orm_o01(_CONTROL)
_MIXED = [t.replace(_PATIENT.encode(), b"%(patient)s") for t in mixed_templates(_CONTROL, _PATIENT)]


def patient_of(conn: int, n: int, conns: int, patients: int) -> str:
    """The patient id of connection *conn*'s *n*th message (from 1) in the mixed feed: each
    patient gets a whole cycle of messages in a row, and each connection its own patients."""
    per_conn = max(1, patients // conns)
    return f"P{conn + conns * (((n - 1) // len(MIXED_CYCLE)) % per_conn):08d}"


def mixed_type(n: int) -> str:
    """The type (a :data:`MIXED_CYCLE` entry) of a connection's *n*th message, from 1."""
    return MIXED_CYCLE[(n - 1) % len(MIXED_CYCLE)]


def _same(conn: _Conn) -> _Conn:
    """A protocol factory's body: the connection object made beforehand."""
    return conn


class _Conn(asyncio.Protocol):
    def __init__(self, gen: LoadGen, cid: int) -> None:
        self.gen, self.cid, self.n = gen, cid, 0
        self.framer = MLLPFramer()
        self.sent_at = 0.0
        self.acked = 0  # messages ACKed AA/CA: with one in flight, the first `acked` sent
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._send()

    def _send(self) -> None:
        if time.perf_counter() >= self.gen.deadline or self.transport is None:
            self.gen.finished(self)
            return
        self.n += 1
        control = f"{self.gen.prefix}{self.cid:03d}{self.n:015d}".encode()
        if self.gen.patients:
            patient = patient_of(self.cid, self.n, self.gen.conns, self.gen.patients).encode()
            template = _MIXED[(self.n - 1) % len(_MIXED)].replace(b"%(patient)s", patient)
        else:
            template = _TEMPLATE
        self.sent_at = time.perf_counter()
        self.transport.write(frame(template.replace(_CONTROL.encode(), control)))

    def data_received(self, data: bytes) -> None:
        for ev in self.framer.feed(data):
            if isinstance(ev, Frame):
                self.gen.latencies.append(time.perf_counter() - self.sent_at)
                msa = ev.payload.find(b"\rMSA|")
                code = ev.payload[msa + 5 : msa + 7].decode()
                self.gen.codes[code] += 1
                if code in ("AA", "CA"):
                    self.acked += 1
                self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.finished(self)


class LoadGen:
    def __init__(
        self,
        host: str,
        port: int,
        conns: int,
        seconds: float,
        *,
        patients: int = 0,
        prefix: str = "L",
    ) -> None:
        self.host, self.port, self.conns, self.seconds = host, port, conns, seconds
        self.patients, self.prefix = patients, prefix
        self.latencies: list[float] = []
        self.codes: Counter[str] = Counter()
        self.deadline = 0.0
        self._open: set[_Conn] = set()
        self._done: asyncio.Event | None = None

    def finished(self, conn: _Conn) -> None:
        self._open.discard(conn)
        if conn.transport is not None:
            conn.transport.close()
            conn.transport = None
        if not self._open and self._done is not None:
            self._done.set()

    async def run(self) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self.deadline = time.perf_counter() + 3600
        protos = [_Conn(self, i) for i in range(self.conns)]
        self._open = set(protos)
        start_wall, start = time.time(), time.perf_counter()
        self.deadline = start + self.seconds
        for p in protos:
            await loop.create_connection(functools.partial(_same, p), self.host, self.port)
        await asyncio.wait_for(self._done.wait(), self.seconds + 30)
        elapsed = time.perf_counter() - start
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

        return {
            "connections": self.conns,
            "messages": len(lat),
            "seconds": elapsed,
            "rate": len(lat) / elapsed,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "codes": dict(self.codes),
            "acked": [p.acked for p in protos],
            "patients": self.patients,
            "start_wall": start_wall,
            "cpu_s": _cpu_seconds(),
        }


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("conns", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--mixed", type=int, default=0, metavar="PATIENTS")
    ap.add_argument("--prefix", default="L")
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    gen = LoadGen(a.host, a.port, a.conns, a.seconds, patients=a.mixed, prefix=a.prefix)
    print(json.dumps(asyncio.run(gen.run())), flush=True)


if __name__ == "__main__":
    main()
