"""The C-STORE SCP's accepting side: pynetdicom's threaded server, with two guards.

* **The PDU guard** (``channels.dicom.pdu_guard``): no association reads a PDU over its
  limit.
* **The peer gate** (``engine.peers``), per TCP connection:

  - ``allow``: checked as the connection is accepted, before a TLS handshake or any byte
    is read; a peer off the list is closed at once (DCM-207).
  - ``max_associations`` and ``max_connections_per_peer`` (a peer: an IPv4 address or an
    IPv6 /64): a connection over either is read up to its A-ASSOCIATE-RQ (bounded by the
    PDU guard) and answered A-ASSOCIATE-RJ, rejected-transient, service-provider
    (presentation), local limit exceeded (DCM-208): the sender retries later. pynetdicom
    itself rejects this way on ``maximum_associations``, and its ``EVT_REQUESTED`` is the
    documented place to reject a request; the rejection ends as pynetdicom's own does
    (``kill``: the RJ is sent and the peer's close, or the ARTIM timer, awaited).

  A connection is counted as it starts, before its TLS handshake, so handshakes too are
  bounded per peer; an admitted one holds its slot until its association thread ends,
  however it ends (released, aborted, rejected for its AE titles, timed out). The gate is
  shared by the accepting thread and the connection threads, so every use holds a lock.

* **TLS**: pynetdicom shakes hands in its accepting thread, without a timeout, so one
  client that connects and sends nothing stopped every later connection (and the
  engine's stop). Here the handshake runs in the connection's own thread within
  ``acse_timeout``; one that fails or times out closes the connection (DCM-210).

``GuardedServer`` is pynetdicom's threaded server with a request handler that puts each
association's socket under the PDU guard and through the gate; ``start_guarded`` starts
one the way ``AE.start_server(block=False)`` does.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from datetime import datetime
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from channels.dicom.pdu_guard import GuardedSocket, PduGuard
from engine.logs import event
from engine.peers import LIMIT, IPAddress, PeerGate, peer_ip

log = logging.getLogger("radbridge.dicom")

# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-transient, DICOM UL service-provider (presentation
# related function), local limit exceeded.
REJECTED_TRANSIENT, SOURCE_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 0x02, 0x03, 0x02


class PeerGuard:
    """A listener's ``PeerGate`` behind a lock, with its refusals logged (no PHI: addresses)."""

    def __init__(self, gate: PeerGate, channel: str) -> None:
        self.gate = gate
        self.channel = channel
        self.lock = threading.Lock()

    def screen(self, address: Any) -> bool:
        """Whether the connection from *address* may be read at all (the allow-list)."""
        with self.lock:
            refused = self.gate.screen(peer_ip(address)) is not None
        if refused:
            event(log, "DCM-207", "connection refused: address not allowed",
                  channel=self.channel, peer=_peer(address), level=logging.WARNING)
        return not refused

    def admit(self, address: Any) -> str | None:
        """Count the connection from *address*; None if admitted, else why it is refused."""
        with self.lock:
            reason = self.gate.admit(peer_ip(address))
        if reason is not None:
            limit = (self.gate.max_connections if reason == LIMIT else self.gate.max_per_peer)
            event(log, "DCM-208", "association rejected: local limit exceeded",
                  channel=self.channel, peer=_peer(address), reason=reason, limit=limit,
                  level=logging.WARNING)
        return reason

    def release(self, ip: IPAddress | None) -> None:
        with self.lock:
            self.gate.release(ip)


def _peer(address: Any) -> str:
    return "{}:{}".format(*address[:2]) if isinstance(address, tuple) else "?"


class GatedAssociation(Association):
    """An acceptor association that gives its gate slot back when its thread ends."""

    guard: PeerGuard
    peer: IPAddress | None

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.guard.release(self.peer)


def _reject_over_limit(ev: Any) -> None:
    """``EVT_REQUESTED`` of a connection over a limit: A-ASSOCIATE-RJ, local limit exceeded."""
    ev.assoc.acse.send_reject(REJECTED_TRANSIENT, SOURCE_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
    ev.assoc.kill()  # as pynetdicom ends its own rejections: the RJ goes out first


class GuardedHandler(RequestHandler):
    """pynetdicom's request handler, with the socket under the PDU guard and the gate.
    Runs in the connection's own thread (``ThreadingMixIn``), until the association's
    thread starts."""

    server: GuardedServer
    refusal: str | None = None
    assoc: Association | None = None

    def handle(self) -> None:
        peers, ip = self.server.peers, peer_ip(self.client_address)
        self.refusal = peers.admit(self.client_address)
        try:
            if not self._handshake():
                self.request.close()
                if self.refusal is None:
                    peers.release(ip)
                return
            super().handle()  # _create_association, then the association's thread starts
        except BaseException:
            if self.refusal is None and (self.assoc is None or self.assoc.ident is None):
                peers.release(ip)  # not started: its run() will never give the slot back
            raise

    def _handshake(self) -> bool:
        """The TLS handshake (deferred by ``GuardedServer.get_request``) within acse_timeout;
        False, logged, when it fails. True at once without TLS."""
        sock = self.request
        if not isinstance(sock, ssl.SSLSocket):
            return True
        before = sock.gettimeout()
        try:
            sock.settimeout(self.ae.acse_timeout)
            sock.do_handshake()
            sock.settimeout(before)
        except OSError as exc:  # ssl.SSLError and TimeoutError among them
            event(log, "DCM-210", "TLS handshake failed, connection closed",
                  channel=self.server.peers.channel, peer=_peer(self.client_address),
                  reason=type(exc).__name__, level=logging.WARNING)
            return False
        return True

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        assert sock is not None
        # AssociationSocket.__init__ queues the transport-connected event: building a second
        # socket would queue it twice, so the one pynetdicom built is given our class.
        sock.__class__ = GuardedSocket
        assert isinstance(sock, GuardedSocket)
        sock.watch(self.server.pdu_guard)
        self.assoc = assoc
        if self.refusal is not None:
            assoc.bind(evt.EVT_REQUESTED, _reject_over_limit)
            return assoc
        # Not started yet: the same object, given a run() that frees its slot at the end.
        assoc.__class__ = GatedAssociation
        assert isinstance(assoc, GatedAssociation)
        assoc.guard, assoc.peer = self.server.peers, peer_ip(self.client_address)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """A threaded association server whose connections pass a ``PeerGuard`` and are read
    under a ``PduGuard``."""

    pdu_guard: PduGuard
    peers: PeerGuard

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; one off the allow-list is closed before TLS or any read.
        With TLS the socket is wrapped, its handshake left to the connection's thread.

        Raises ``OSError`` for a refused connection (``socketserver`` then drops it).
        """
        assert self.socket is not None
        client, address = self.socket.accept()
        if not self.peers.screen(address):
            client.close()
            raise ConnectionRefusedError("address not allowed")
        if self.ssl_context:
            try:
                client = self.ssl_context.wrap_socket(
                    client, server_side=True, do_handshake_on_connect=False)
            except OSError:
                client.close()
                raise
        return client, address

    def shutdown(self) -> None:
        """Stop serving and close the socket (the AE never listed this server)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def start_guarded(
    ae: AE, address: tuple[str, int], pdu_guard: PduGuard, peers: PeerGuard,
    ssl_context: Any, evt_handlers: list[Any],
) -> GuardedServer:
    """Start serving in a daemon thread, like ``AE.start_server(block=False)``."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=evt_handlers,
        server_class=GuardedServer,
        request_handler=GuardedHandler,
    )
    assert isinstance(server, GuardedServer)
    server.pdu_guard, server.peers = pdu_guard, peers
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    threading.Thread(
        target=server.serve_forever, name=f"AcceptorServer@{stamp}", daemon=True
    ).start()
    return server
