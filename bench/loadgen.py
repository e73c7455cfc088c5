"""MLLP load generator: N connections, one message in flight each, ACK latency recorded.

Runs in its own process (``python -m bench.loadgen HOST PORT CONNS SECONDS``)
and prints one JSON line: messages, seconds, ACK codes, latency percentiles.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import cast

from bench.hl7gen import orm_o01
from channels.mllp.framing import Frame, MLLPFramer, frame

_TEMPLATE = orm_o01("CTRLID_PLACEHOLDER_")


class _Conn(asyncio.Protocol):
    def __init__(self, gen: LoadGen, cid: int) -> None:
        self.gen, self.cid, self.n = gen, cid, 0
        self.framer = MLLPFramer()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._send()

    def _send(self) -> None:
        if time.perf_counter() >= self.gen.deadline or self.transport is None:
            self.gen.finished(self)
            return
        self.n += 1
        control = f"L{self.cid:03d}{self.n:015d}".encode()
        self.sent_at = time.perf_counter()
        self.transport.write(frame(_TEMPLATE.replace(b"CTRLID_PLACEHOLDER_", control)))

    def data_received(self, data: bytes) -> None:
        for ev in self.framer.feed(data):
            if isinstance(ev, Frame):
                self.gen.latencies.append(time.perf_counter() - self.sent_at)
                msa = ev.payload.find(b"\rMSA|")
                self.gen.codes[ev.payload[msa + 5:msa + 7].decode()] += 1
                self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.finished(self)


class LoadGen:
    def __init__(self, host: str, port: int, conns: int, seconds: float) -> None:
        self.host, self.port, self.conns, self.seconds = host, port, conns, seconds
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
        start = time.perf_counter()
        self.deadline = start + self.seconds
        for p in protos:
            await loop.create_connection(lambda p=p: p, self.host, self.port)
        await asyncio.wait_for(self._done.wait(), self.seconds + 30)
        elapsed = time.perf_counter() - start
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

        return {"connections": self.conns, "messages": len(lat), "seconds": elapsed,
                "rate": len(lat) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "codes": dict(self.codes)}


def main() -> None:
    host, port, conns, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(LoadGen(host, port, conns, seconds).run())), flush=True)


if __name__ == "__main__":
    main()
