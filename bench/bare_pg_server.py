"""The PostgreSQL reference: a bare asyncio MLLP server that commits each message to
PostgreSQL through asyncpg, with group commit and ``synchronous_commit = on``, before
writing a fixed-shape ACK.

Like ``bench.bare_server`` (its SQLite twin) it does only what durability demands: the
ceiling the engine on PostgreSQL is measured against. ``python -m bench.bare_pg_server DSN``
(a table ``m`` in the DSN's search_path) prints ``listening ref HOST:PORT`` then ``READY``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable

import asyncpg

from channels.mllp.framing import Frame, MLLPFramer, frame

Pending = tuple[bytes, Callable[[], None]]


async def writer(conn: asyncpg.Connection, q: asyncio.Queue[Pending]) -> None:
    """Commit whatever waits in one transaction, then send those ACKs; again."""
    while True:
        batch = [await q.get()]
        while not q.empty():
            batch.append(q.get_nowait())
        async with conn.transaction():
            await conn.executemany("INSERT INTO m (raw) VALUES ($1)", [(raw,) for raw, _ in batch])
        for _, ack in batch:
            ack()


class Conn(asyncio.Protocol):
    def __init__(self, q: asyncio.Queue[Pending]) -> None:
        self.q = q
        self.framer = MLLPFramer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for ev in self.framer.feed(data):
            if isinstance(ev, Frame):
                cid = ev.payload.split(b"|", 10)[9]
                ack = frame(b"MSH|^~\\&|REF||||20260101||ACK|1|P|2.5.1\rMSA|AA|" + cid + b"\r")
                self.q.put_nowait((ev.payload, functools.partial(self.transport.write, ack)))


async def main(dsn: str) -> None:
    loop = asyncio.get_running_loop()
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "on"})
    await conn.execute("CREATE TABLE IF NOT EXISTS m (id bigserial PRIMARY KEY, raw bytea)")
    q: asyncio.Queue[Pending] = asyncio.Queue()
    task = asyncio.create_task(writer(conn, q))
    server = await loop.create_server(lambda: Conn(q), "127.0.0.1", 0, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening ref {host}:{port}", flush=True)
    print("READY", flush=True)
    await task


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1]))
