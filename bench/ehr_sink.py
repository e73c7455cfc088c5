"""An EHR stand-in for benchmarks: an asyncio MLLP server that answers every frame AA.

``python -m bench.ehr_sink OUTFILE`` prints ``listening sink HOST:PORT`` then ``READY``,
records the control id (MSH-10) of every frame in the order they arrive and, on SIGTERM,
writes them to OUTFILE, one a line, and exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from channels.mllp.framing import Frame, MLLPFramer, frame


class _Conn(asyncio.Protocol):
    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen
        self.framer = MLLPFramer()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for ev in self.framer.feed(data):
            if isinstance(ev, Frame) and self.transport is not None:
                cid = ev.payload.split(b"|", 10)[9]
                self.seen.append(cid)
                self.transport.write(
                    frame(b"MSH|^~\\&|EHR||||20260101||ACK|1|P|2.5.1\rMSA|AA|" + cid + b"\r")
                )


async def main() -> list[bytes]:
    loop = asyncio.get_running_loop()
    seen: list[bytes] = []
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_server(lambda: _Conn(seen), "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening sink {host}:{port}", flush=True)
    print("READY", flush=True)
    await stop.wait()
    server.close()
    return seen


if __name__ == "__main__":
    Path(sys.argv[1]).write_bytes(b"".join(c + b"\n" for c in asyncio.run(main())))
