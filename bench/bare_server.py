"""The reference: a bare asyncio MLLP server that commits each message to SQLite
(WAL, synchronous=FULL) with group commit before writing a fixed-shape ACK.

It does only what durability demands, no header checks or policy: the ceiling
the engine is measured against. ``python -m bench.bare_server DBPATH`` prints
``listening HOST:PORT`` then ``READY``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import sys
import threading

from channels.mllp.framing import Frame, MLLPFramer, frame


def writer(path: str, q: queue.SimpleQueue, loop: asyncio.AbstractEventLoop) -> None:  # type: ignore[type-arg]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS m (id INTEGER PRIMARY KEY, raw BLOB)")
    while True:
        batch = [q.get()]
        while True:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO m (raw) VALUES (?)", [(raw,) for raw, _ in batch])
        conn.execute("COMMIT")
        loop.call_soon_threadsafe(lambda b=batch: [cb() for _, cb in b])


class Conn(asyncio.Protocol):
    def __init__(self, q: queue.SimpleQueue) -> None:  # type: ignore[type-arg]
        self.q = q
        self.framer = MLLPFramer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for ev in self.framer.feed(data):
            if isinstance(ev, Frame):
                cid = ev.payload.split(b"|", 10)[9]
                ack = frame(b"MSH|^~\\&|REF||||20260101||ACK|1|P|2.5.1\rMSA|AA|" + cid + b"\r")
                self.q.put((ev.payload, lambda a=ack: self.transport.write(a)))  # type: ignore[attr-defined]


async def main(path: str) -> None:
    loop = asyncio.get_running_loop()
    q: queue.SimpleQueue = queue.SimpleQueue()  # type: ignore[type-arg]
    threading.Thread(target=writer, args=(path, q, loop), daemon=True).start()
    server = await loop.create_server(lambda: Conn(q), "127.0.0.1", 0, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening ref {host}:{port}", flush=True)
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1]))
