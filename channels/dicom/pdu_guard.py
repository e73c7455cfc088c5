"""Refuse an incoming PDU larger than we accept, after reading only its 6-byte header.

pynetdicom advertises ``maximum_pdu_size`` but reads whatever length a PDU
header declares into memory, before association too: 96 MiB declared is
96 MiB buffered. Its DUL reads each PDU in two calls on the association
socket, ``recv(6)`` (type and length) then ``recv(length)``. ``GuardedSocket``
sits on that seam: a body read longer than ``pdu_limit`` allows is never
made; instead an A-ABORT PDU (source: service provider, reason: invalid PDU
parameter value) is sent and an empty read is returned, which pynetdicom
treats as the transport closing: it closes the connection and ends the
association (none yet, or an aborted one). Nothing of the oversized body is
read.

Limits (``pdu_limit``): a P-DATA-TF PDU may carry at most the ``max_pdu`` we
advertise (PS3.8 D.1, the PDU length is the variable field it limits; 0, no
limit advertised, still stops at ``UNADVERTISED_LIMIT``); any other PDU (an
A-ASSOCIATE-RQ, release, abort) at most ``max(max_pdu, CONTROL_LIMIT)``.

The same guard reads the PACS's answers where we are the requestor (the
C-STORE SCU, ``channels.dicom.scu``): ``guard_requestor`` puts the socket
under it as the connection opens, before the first PDU is read. The SCP's
server puts each accepted socket under it (``channels.dicom.listener``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

from engine.logs import event

log = logging.getLogger("radbridge.dicom")

P_DATA_TF = 0x04
CONTROL_LIMIT = 1024 * 1024
UNADVERTISED_LIMIT = 64 * 1024 * 1024
HEADER_BYTES = 6
INVALID_PDU_PARAMETER = 0x06


def pdu_limit(pdu_type: int | None, max_pdu: int) -> int:
    """The largest PDU length (the header's length field) accepted for *pdu_type*."""
    data_limit = max_pdu or UNADVERTISED_LIMIT
    if pdu_type == P_DATA_TF:
        return data_limit
    return max(data_limit, CONTROL_LIMIT)


def abort_pdu() -> bytes:
    """An A-ABORT PDU from the service provider: invalid PDU parameter value."""
    pdu = A_ABORT_RQ()
    pdu.source = 0x02
    pdu.reason_diagnostic = INVALID_PDU_PARAMETER
    return bytes(pdu.encode())


@dataclass
class Refusal:
    """One refused PDU: what it declared and what we had read of the connection."""

    pdu_type: int | None
    declared: int
    limit: int
    bytes_read: int


@dataclass
class PduGuard:
    """The limit of one listener and what it refused (read by tests and counters)."""

    max_pdu: int
    channel: str = ""
    destination: str = ""  # the C-STORE SCU's: its PACS's PDUs are read under this guard
    refusals: list[Refusal] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refused(self, refusal: Refusal, peer: str) -> None:
        with self.lock:
            self.refusals.append(refusal)
        event(
            log,
            "DCM-205",
            "PDU over the limit, connection aborted",
            channel=self.channel or None,
            destination=self.destination or None,
            peer=peer,
            declared=refusal.declared,
            limit=refusal.limit,
            level=logging.WARNING,
        )


class GuardedSocket(AssociationSocket):
    """An ``AssociationSocket`` that will not read a PDU body over its guard's limit."""

    guard: PduGuard
    bytes_read: int
    _pdu_type: int | None
    _refused: bool

    def watch(self, guard: PduGuard) -> None:
        self.guard, self.bytes_read, self._pdu_type, self._refused = guard, 0, None, False

    def recv(self, nr_bytes: int) -> bytearray:
        """Read *nr_bytes*; a PDU body over the limit is refused unread (see the module)."""
        if self._refused:
            return bytearray()
        if nr_bytes != HEADER_BYTES:  # a body: pynetdicom asks for the length just declared
            limit = pdu_limit(self._pdu_type, self.guard.max_pdu)
            if nr_bytes > limit:
                self._refuse(nr_bytes, limit)
                return bytearray()
        data = super().recv(nr_bytes)
        self.bytes_read += len(data)
        if nr_bytes == HEADER_BYTES and data:
            self._pdu_type = data[0]
        return data

    def _refuse(self, declared: int, limit: int) -> None:
        self._refused = True
        sock = self.socket
        peer = "?"
        if sock is not None:
            try:
                peer = "{}:{}".format(*sock.getpeername()[:2])
                sock.sendall(abort_pdu())  # pynetdicom closes the socket on our empty read
            except OSError:
                pass
        self.guard.refused(Refusal(self._pdu_type, declared, limit, self.bytes_read), peer)
        if self.bytes_read == HEADER_BYTES and self.assoc.is_acceptor:
            # The first PDU of the connection: pynetdicom's acceptor would wait acse_timeout
            # for an A-ASSOCIATE that will not come; an empty primitive is how its own
            # timeout ends that wait (the thread and its association slot are freed now).
            self.assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


def guard_requestor(guard: PduGuard) -> tuple[Any, Any]:
    """An ``evt_handlers`` entry for ``AE.associate``: the requestor's socket is read under
    *guard* from its first PDU (the A-ASSOCIATE-AC) on.

    pynetdicom triggers ``EVT_CONN_OPEN`` in its DUL thread once the connection (and TLS)
    is up, before that thread reads anything, so the socket changes class between reads.
    A refused PDU ends the association as a closed connection does: aborted.
    """
    def watch(ev: Any) -> None:
        sock = ev.assoc.dul.socket
        sock.__class__ = GuardedSocket
        sock.watch(guard)

    return (evt.EVT_CONN_OPEN, watch)
