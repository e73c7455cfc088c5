"""The C-STORE SCP: pynetdicom's threaded server in front of an ``InstanceIngest``.

pynetdicom runs one thread per association. The C-STORE handler takes the
dataset exactly as the peer encoded it (no decode, no re-encode), makes it
durable through ``InstanceIngest.ingest_from_thread`` and answers only once
that returns, so 0x0000 always means "on disk and indexed". The event loop
is never blocked: only the association thread waits for the index commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, VerificationPresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from channels.dicom.config import DicomSourceConfig
from channels.dicom.listener import PeerGuard, start_guarded
from channels.dicom.part10 import read_meta
from channels.dicom.pdu_guard import PduGuard
from channels.dicom.sop_classes import register_storage_classes, storage_sop_classes
from channels.dicom.status import MISMATCH, SUCCESS, classify, error_comment
from engine.config.base import parse_hostport
from engine.flow.instances import InstanceIngest, InvalidInstance
from engine.logs import event
from engine.peers import PeerGate
from engine.registry import register

log = logging.getLogger("radbridge.dicom")


@register("source", "dicom", DicomSourceConfig,
          "DICOM C-STORE SCP: every storage SOP class and transfer syntax, C-ECHO",
          sink="dicom")
class DicomSource:
    """A storage SCP for one channel; ``start``/``stop`` run on the event loop.

    ``start`` raises ``OSError`` when the address cannot be bound. A connection from
    an address off ``allow`` is closed unread; one over ``max_associations`` or
    ``max_connections_per_peer`` is answered A-ASSOCIATE-RJ, transient
    (``channels.dicom.listener``). Association checks (called AE, calling AE allow
    list) are done by pynetdicom during negotiation and answered A-ASSOCIATE-RJ.
    Every storage SOP class is offered (``channels.dicom.sop_classes``), and a PDU
    declaring more than ``max_pdu`` is aborted unread (``channels.dicom.pdu_guard``).
    """

    def __init__(self, name: str, config: DicomSourceConfig, sink: InstanceIngest) -> None:
        self.name = name
        self.config = config
        self.sink = sink
        self.server: ThreadedAssociationServer | None = None
        self.stored = 0
        self.failed = 0
        self.rejected = 0
        self.pdu_guard = PduGuard(config.max_pdu, name)
        self.peers = PeerGuard(PeerGate(config.max_associations, config), name)
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port); the real port when configured with port 0."""
        if self.server is None:
            return None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self.sink.bind(asyncio.get_running_loop())
        host, port = parse_hostport(self.config.listen)
        ssl_context = self.config.tls.server_context() if self.config.tls else None
        ae = self._make_ae()
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_ESTABLISHED, self._on_established)]
        server = await asyncio.to_thread(start_guarded, ae, (host, port), self.pdu_guard,
                                         self.peers, ssl_context, handlers)
        self.server = server
        event(log, "DCM-200", "C-STORE SCP listening", channel=self.name,
              ae=self.config.ae_title, port=server.server_address[1])

    def _make_ae(self) -> AE:
        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        register_storage_classes()
        for uid in storage_sop_classes():
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        for cx in VerificationPresentationContexts:
            assert cx.abstract_syntax is not None
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.require_called_aet = True
        ae.require_calling_aet = list(cfg.allowed_calling_aets)
        ae.maximum_pdu_size = cfg.max_pdu
        ae.maximum_associations = cfg.max_associations
        ae.network_timeout = cfg.network_timeout_secs
        ae.acse_timeout = cfg.acse_timeout_secs
        ae.dimse_timeout = cfg.dimse_timeout_secs
        return ae

    async def stop(self) -> None:
        """Stop accepting, let open associations finish (``stop_grace_secs``), abort the rest."""
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(self._shutdown, server)
            event(log, "DCM-209", "C-STORE SCP stopped", channel=self.name,
                  stored=self.stored, failed=self.failed, rejected=self.rejected)

    def _shutdown(self, server: ThreadedAssociationServer) -> None:
        open_assocs = server.active_associations
        server.shutdown()
        deadline = time.monotonic() + self.config.stop_grace_secs
        while any(a.is_alive() for a in open_assocs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in open_assocs:
            if assoc.is_alive():
                assoc.abort()
        for assoc in open_assocs:
            assoc.join(timeout=10)

    def _on_store(self, ev: Any) -> Dataset:
        """Make one instance durable and indexed, then answer. Runs in the association thread.

        Statuses answered:

        * 0x0000 success: the file is fsynced and its row committed.
        * 0xA700 refused, out of resources: the store or disk is unavailable (retry later).
        * 0xA701 refused, out of resources: not indexed within ``store_timeout_secs``.
        * 0xA900 error: the dataset's SOP Class/Instance UID differs from the request's, or
          one of its UIDs breaks the DICOM UID grammar (ErrorComment names which).
        * 0xC000 error, cannot understand: not a usable DICOM instance: truncated, encoded
          otherwise than its transfer syntax says, pixel data missing or short (with
          ErrorComment naming what is wrong).
        * 0xC211 error, unable to process: an unexpected error of ours (logged as a bug).
        """
        try:
            part10 = ev.encoded_dataset(include_meta=True)
            meta = read_meta(part10, self.sink.own_manufacturer)
            if (meta.sop_class_uid != ev.request.AffectedSOPClassUID
                    or meta.sop_uid != ev.request.AffectedSOPInstanceUID):
                return self._failed(ev, MISMATCH, "dataset does not match the C-STORE request")
            self.sink.ingest_from_thread(part10, meta, timeout=self.config.store_timeout_secs)
        except Exception as exc:
            failure = classify(exc)
            if not isinstance(exc, InvalidInstance) and not failure.transient:
                log.exception("DCM-299 unexpected error storing an instance channel=%s",
                              self.name)
            return self._failed(ev, failure.code, failure.comment)
        with self._lock:
            self.stored += 1
        return _status(SUCCESS)

    def _failed(self, ev: Any, code: int, comment: str) -> Dataset:
        with self._lock:
            self.failed += 1
        event(log, "DCM-202", "instance refused", channel=self.name,
              calling=ev.assoc.requestor.ae_title, status=f"0x{code:04X}", reason=comment,
              level=logging.WARNING)
        return _status(code, comment)

    def _on_echo(self, ev: Any) -> int:
        """C-ECHO: always 0x0000 (success) once the association is accepted."""
        event(log, "DCM-204", "C-ECHO", channel=self.name, calling=ev.assoc.requestor.ae_title,
              level=logging.DEBUG)
        return SUCCESS

    def _on_rejected(self, ev: Any) -> None:
        with self._lock:
            self.rejected += 1
        rq = ev.assoc.requestor
        event(log, "DCM-203", "association rejected", channel=self.name, calling=rq.ae_title,
              called=rq.primitive.called_ae_title if rq.primitive else None,
              peer=f"{rq.address}:{rq.port}", level=logging.WARNING)

    def _on_established(self, ev: Any) -> None:
        rq = ev.assoc.requestor
        event(log, "DCM-201", "association accepted", channel=self.name, calling=rq.ae_title,
              peer=f"{rq.address}:{rq.port}", level=logging.DEBUG)


def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = error_comment(comment)
    return ds
