"""C-STORE SCU destination: stores each Part 10 payload (our SR) on a PACS over DIMSE.

pynetdicom is blocking, so every association step runs in one dedicated worker thread
(never on the event loop, and never two at once: an association is not thread-safe).
The association is kept open between sends and reused while the peer keeps it and it
accepts the payload's SOP class; one idle longer than ``keep_open_secs`` is released and
a fresh one negotiated, so a PACS that drops idle associations costs nothing.

What ``send`` raises, by type (``engine.errors``):

==========================================  =============================================
what happened                               ``send``
==========================================  =============================================
status 0x0000, or a warning (0x0001, 0xBxxx)  returns "0xCODE category: text" (SENT)
status 0xA7xx (refused: out of resources)     ``PeerUnavailable``: the PACS says retry later
                                              (as our own SCP means it, ``channels.dicom.status``);
                                              after ``max_refusals`` of them for one instance,
                                              ``PeerRejected`` (Orthanc answers 0xA700 for every
                                              failed store, a bad object included)
any other failure status (0xA9xx, 0xCxxx...)  ``PeerRejected`` with the status and its text
the PACS accepts no context for the class     ``PeerRejected`` (it cannot store this object:
  or the transfer syntax                        resending the same bytes fails the same way)
association refused, aborted, no connection   ``PeerUnavailable``
a PDU from the PACS over our limit            ``PeerUnavailable`` (aborted after its 6-byte
  (``max_pdu``; see ``pdu_guard``)              header, the body never read or buffered)
no response within ``timeout_secs``           ``PeerTimeout``
the payload is not a DICOM file               ``PeerRejected`` (resending cannot help)
==========================================  =============================================
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pydicom
from pydantic import Field, field_validator
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from channels.dicom.config import check_ae_title
from channels.dicom.pdu_guard import PduGuard, guard_requestor
from channels.dicom.status import error_comment
from engine.config.base import Strict, check_hostport, parse_hostport
from engine.connectors import DestinationBase
from engine.errors import PeerRejected, PeerTimeout, PeerUnavailable
from engine.logs import event
from engine.model import DeliveryRef
from engine.registry import register

log = logging.getLogger("radbridge.dicom.scu")


class StoreSCUConfig(Strict):
    type: Literal["dicom"]
    endpoint: str = Field(description='The PACS\'s DICOM port, "host:port".')
    called_ae: str = Field(description="The PACS's AE title.")
    calling_ae: str = Field("RADBRIDGE", description="Our AE title, as the PACS knows it.")
    timeout_secs: float = Field(
        30, gt=0, description="Connect, association negotiation and each C-STORE response.")
    keep_open_secs: float = Field(
        30, ge=0, description="Reuse an association idle no longer than this; 0: one "
                              "association per instance.")
    max_pdu: int = Field(
        262_144, ge=0,
        description="Largest P-DATA PDU we accept from the PACS, in bytes; one declaring more "
                    "aborts the association after its 6-byte header and the send is retried "
                    "(0: no limit advertised, still aborted above 64 MiB).")
    retry_initial_secs: float = Field(1, gt=0)
    retry_max_secs: float = Field(300, gt=0)
    max_refusals: int = Field(
        0, ge=0, description="0xA7xx (refused: out of resources) means 'later' and is retried; "
                             "after this many for the same instance the delivery fails instead "
                             "(0: retry for ever). Orthanc answers 0xA700 for every failed "
                             "store, so against Orthanc set e.g. 5: an object it cannot store "
                             "then fails with its reason instead of holding up the queue.")

    _check_endpoint = field_validator("endpoint")(classmethod(lambda cls, v: check_hostport(v)))
    _check_called = field_validator("called_ae")(classmethod(lambda cls, v: check_ae_title(v)))
    _check_calling = field_validator("calling_ae")(
        classmethod(lambda cls, v: check_ae_title(v)))


def status_text(code: int) -> str:
    """ "0xC000 Failure: Error: Cannot understand" from the Storage Service Class table."""
    category = code_to_category(code)
    meaning = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", ""))[1]
    return f"0x{code:04X} {category}" + (f": {meaning}" if meaning else "")


@register("destination", "dicom", StoreSCUConfig, "DICOM C-STORE SCU to a PACS", sink="dicom")
class StoreSCUDestination(DestinationBase):
    """Stores one instance per ``send``; see the module docstring for every outcome."""

    def __init__(self, name: str, config: StoreSCUConfig) -> None:
        self.name = name
        self.config = config
        self.retry_initial_secs = config.retry_initial_secs
        self.retry_max_secs = config.retry_max_secs
        self.host, self.port = parse_hostport(config.endpoint, default_host="127.0.0.1")
        self._pool: ThreadPoolExecutor | None = None
        self._assoc: Association | None = None
        self._contexts: set[tuple[str, str]] = set()
        self._last_used = 0.0
        self._refusals: dict[str, int] = {}  # SOP Instance UID -> 0xA7xx answers in a row
        self.pdu_guard = PduGuard(config.max_pdu, destination=name)

    async def connect(self) -> None:
        return None  # associations open on demand: a PACS down at start-up is fine

    async def send(self, payload: bytes, ref: DeliveryRef | None = None) -> bytes:
        if self._pool is None:  # one thread: the association is never used concurrently
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"scu-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._store, payload)

    async def close(self) -> None:
        """Release the association (A-RELEASE); a later ``send`` opens a new one."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(pool, self._release)
            pool.shutdown(wait=False)

    # -- the worker thread ---------------------------------------------------------------

    def _store(self, payload: bytes) -> bytes:
        try:
            ds = pydicom.dcmread(io.BytesIO(payload), force=False)
            sop_class = UID(str(ds.SOPClassUID))
            tsyntax = UID(str(ds.file_meta.TransferSyntaxUID))
        except Exception as exc:  # noqa: BLE001 (any parse failure means "not DICOM")
            raise PeerRejected("invalid", f"not a DICOM Part 10 payload "
                                          f"({type(exc).__name__})") from None
        assoc = self._association(sop_class, tsyntax)
        started = time.monotonic()
        try:
            status = assoc.send_c_store(ds)
        except ValueError as exc:  # no accepted presentation context for this class
            self._release()
            raise PeerRejected("no context", f"the PACS accepts no presentation context for "
                                             f"{sop_class.name} ({tsyntax.name})") from exc
        except (OSError, RuntimeError) as exc:  # the association died under us
            self._drop()
            raise PeerUnavailable(f"C-STORE failed: {type(exc).__name__}") from None
        self._last_used = time.monotonic()
        if "Status" not in status:  # no response: DIMSE timeout, or the peer aborted
            self._drop()
            if self._last_used - started >= self.config.timeout_secs * 0.95:
                raise PeerTimeout(f"no C-STORE response within "
                                  f"{self.config.timeout_secs:g} s")
            raise PeerUnavailable("association aborted before the C-STORE response")
        return self._judge(status, str(ds.SOPInstanceUID))

    def _judge(self, status: Dataset, sop_uid: str) -> bytes:
        code = int(status.Status)
        text = status_text(code)
        comment = error_comment(str(status.get("ErrorComment", "") or ""))
        full = f"{text} ({comment})" if comment else text
        category = code_to_category(code)
        refusals = self._refusals.pop(sop_uid, 0)
        if category in ("Success", "Warning"):
            event(log, "DCM-301", "instance stored", destination=self.name, sop=sop_uid,
                  status=f"0x{code:04X}", level=logging.DEBUG)
            return full.encode()
        event(log, "DCM-302", "PACS refused the instance", destination=self.name, sop=sop_uid,
              status=f"0x{code:04X}")
        if code & 0xFF00 == 0xA700:  # refused: out of resources (a PACS says "later")
            refusals += 1
            limit = self.config.max_refusals
            if not limit or refusals < limit:
                if len(self._refusals) > 10_000:  # bounded: instances that never came back
                    self._refusals.clear()
                self._refusals[sop_uid] = refusals
                raise PeerUnavailable(full)
            full = f"{full}; refused {refusals} times in a row (max_refusals)"
        raise PeerRejected(f"0x{code:04X}", full, full.encode())

    def _association(self, sop_class: UID, tsyntax: UID) -> Association:
        assoc, cfg = self._assoc, self.config
        fresh = time.monotonic() - self._last_used <= cfg.keep_open_secs
        if (assoc is not None and assoc.is_established and fresh
                and (sop_class, tsyntax) in self._contexts):
            return assoc
        self._release()
        syntaxes: list[str | UID] = list(dict.fromkeys(
            [tsyntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
        ae = AE(ae_title=cfg.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout_secs
        ae.connection_timeout = cfg.timeout_secs
        assoc = ae.associate(self.host, self.port, [build_context(sop_class, syntaxes)],
                             ae_title=cfg.called_ae, max_pdu=cfg.max_pdu,
                             evt_handlers=[guard_requestor(self.pdu_guard)])
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts and not assoc.is_rejected:
                raise PeerRejected("no context", f"the PACS accepts no presentation context "
                                                 f"for {sop_class.name} ({tsyntax.name})")
            raise PeerUnavailable(self._why_not(assoc))
        self._assoc, self._contexts = assoc, {(sop_class, tsyntax)}
        self._last_used = time.monotonic()
        return assoc

    def _why_not(self, assoc: Association) -> str:
        where = f"{self.config.called_ae}@{self.host}:{self.port}"
        if assoc.is_rejected:
            rj: Any = assoc.acceptor.primitive if assoc.acceptor else None
            detail = (f" (result {rj.result}, source {rj.result_source}, reason "
                      f"{rj.diagnostic})" if rj is not None and rj.result is not None else "")
            event(log, "DCM-303", "association rejected", destination=self.name,
                  called_ae=self.config.called_ae, level=logging.WARNING)
            return f"association rejected by {where}{detail}"
        return f"no association with {where} (connection refused, aborted or timed out)"

    def _release(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    def _drop(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.abort()
        self._assoc = None
