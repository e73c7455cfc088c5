"""One contract, every destination type, each against its real peer on loopback.

What ``send`` raises is the whole contract between a destination and the delivery worker
(``engine.connectors``, ``engine.errors``): the worker decides retry-or-fail by type alone. So
each registered destination type is driven through the same cases:

* ``send``: a message reaches the peer and ``send`` returns the peer's answer;
* ``peer_down``: nothing at the peer's address: a ``TransientDeliveryError`` (retry);
* ``peer_rejects``: the peer refuses this message: a ``PermanentDeliveryError`` (usually
  ``PeerRejected``) that carries the peer's reason;
* ``slow_peer``: the peer takes longer than the configured timeout: ``PeerTimeout``;
* ``busy_peer``: the peer says "later" with ``Retry-After: 7``: ``RetryLater``, 7 s;
* ``reopen``: ``close``, then ``send`` again opens a new connection by itself;
* ``batch``: ``send_batch`` delivers every item in order, one answer each;
* ``batch_stops``: the peer refuses the first item of a batch: ``send_batch`` returns the
  refusal (typed as ``send`` raises it) without raising, and does not try the next one;
* ``batch_peer_down``: nothing at the peer's address: the batch returns a
  ``TransientDeliveryError`` for its first item, nothing delivered.

A case that cannot apply to a type is listed in ``NOT_APPLICABLE`` with the reason; the
matrix test fails when a registered type and a case are neither run nor explained. Peers:
python-hl7's MLLP server (``HL7Sink``), a directory, the loopback FHIR server, Orthanc
(C-STORE and STOW-RS), and where a real PACS cannot be made to refuse or stall on demand,
the scripted pynetdicom SCP and aiohttp STOW-RS server of ``test_sr_pacs``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from engine import registry
from engine.connectors import Destination
from engine.errors import (
    PeerRejected,
    PeerTimeout,
    PermanentDeliveryError,
    RetryLater,
    TransientDeliveryError,
)
from engine.model import DeliveryRef
from mappings.dicom_sr import build_sr, sr_part10
from radbridge_fhir.bundle import build_bundle
from tests.fixtures.fhir_server import FhirTestServer, outcome
from tests.fixtures.orthanc import Orthanc
from tests.fixtures.peers import HL7Sink
from tests.fixtures.reports import sample_report
from tests.integration.test_sr_pacs import REFUSED_SOCKET, ScriptedSCP, ScriptedStow

CASES = ("send", "peer_down", "peer_rejects", "slow_peer", "busy_peer", "reopen", "batch",
         "batch_stops", "batch_peer_down")
HTTP_ONLY = "Retry-After is HTTP's; this protocol's 'later' is typed by its own codes"
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("file", "peer_down"): "a directory has no peer to be down; ENOSPC, EIO, EROFS... are "
    "classified by errno once, in engine.outfiles (test_hardening_poison)",
    ("file", "slow_peer"): "a local write waits on no peer and has no timeout",
    ("file", "batch_peer_down"): "a directory has no peer to be down (see file-peer_down)",
    ("file", "busy_peer"): HTTP_ONLY,
    ("mllp", "busy_peer"): HTTP_ONLY + " (retry_on ACK codes, test_forwarding)",
    ("dicom", "busy_peer"): HTTP_ONLY + " (0xA7xx out of resources, test_sr_pacs)",
}


@dataclass
class Live:
    """A destination aimed at a peer in one mode, what to send it, and what the peer holds."""

    dest: Destination
    payload: Callable[[], bytes]  # a new message at each call (a PACS keeps one per UID)
    held: Callable[[], Awaitable[int]]  # messages the peer has taken
    reason: str = ""  # what a rejection must say (the peer's words)


class Kind(Protocol):
    """How to run one destination type's peer: mode is ok, down, reject, slow or busy."""

    def peer(self, mode: str, tmp: Path) -> AbstractAsyncContextManager[Live]: ...


def make(type_name: str, **config: Any) -> Destination:
    """A destination built the way the engine builds it: through the registry."""
    spec = registry.get("destination", type_name)
    model: Any = spec.config
    dest: Destination = spec.factory(
        f"contract-{type_name}", model.model_validate({"type": type_name, **config})
    )
    return dest


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sr_payloads(tmp: Path, *, broken: bool = False) -> Callable[[], bytes]:
    """A new DICOM SR (new UIDs) at each call."""
    made = iter(range(1_000))

    def payload() -> bytes:
        report = sample_report(tmp / f"study{next(made)}")
        sr = build_sr(report, report.models[0])
        if broken:
            del sr.StudyInstanceUID  # a PACS cannot index it
        return sr_part10(sr)

    return payload


def same(payload: bytes) -> Callable[[], bytes]:
    return lambda: payload


# -- the peers ------------------------------------------------------------------------------


class Mllp:
    @asynccontextmanager
    async def peer(self, mode: str, tmp: Path) -> AsyncIterator[Live]:
        from bench.hl7gen import orm_o01

        sink = HL7Sink({"reject": "AR", "slow": "silent"}.get(mode, "AA"))
        await sink.start()
        endpoint = sink.endpoint if mode != "down" else f"127.0.0.1:{free_port()}"
        dest = make("mllp", endpoint=endpoint, connect_timeout_secs=5, ack_timeout_secs=0.3)

        async def held() -> int:
            return len(sink.received)

        try:
            yield Live(dest, same(orm_o01("CONTRACT1")), held, reason="peer says AR")
        finally:
            await dest.close()
            await sink.stop()


class File:
    @asynccontextmanager
    async def peer(self, mode: str, tmp: Path) -> AsyncIterator[Live]:
        out = tmp / "out"
        dest = make("file", directory=str(out), fsync=False)
        if mode == "reject":  # every name this delivery may take holds other bytes
            out.mkdir()
            (out / "000000000001-000000000001.hl7").write_bytes(b"someone else's")
            for n in range(1, 100):
                (out / f"000000000001-000000000001.{n}.hl7").write_bytes(b"someone else's")

        async def held() -> int:
            return len([p for p in out.iterdir() if not p.name.startswith(".")])

        try:
            yield Live(dest, same(b"MSH|^~\\&|CONTRACT\r"), held, reason="100 names taken")
        finally:
            await dest.close()


class FhirRest:
    @asynccontextmanager
    async def peer(self, mode: str, tmp: Path) -> AsyncIterator[Live]:
        server = FhirTestServer()
        await server.start()
        url = server.url if mode != "down" else f"http://127.0.0.1:{free_port()}"
        dest = make("fhir_rest", base_url=url, timeout_secs=0.3 if mode == "slow" else 30)
        if mode == "reject":
            server.script(422, outcome("Observation.code: unknown code system"))
        elif mode == "slow":
            server.script(200, {"resourceType": "Bundle"}, delay=1.5)
        elif mode == "busy":
            server.script(429, outcome("slow down", "throttled"), {"Retry-After": "7"})
        payload = json.dumps(build_bundle(sample_report(tmp)), sort_keys=True).encode()

        async def held() -> int:
            return server.transactions

        try:
            yield Live(dest, same(payload), held, reason="unknown code system")
        finally:
            await dest.close()
            await server.close()


@asynccontextmanager
async def scripted_http(mode: str) -> AsyncIterator[ScriptedStow]:
    """An aiohttp endpoint answering as told (200; 400; 1.5 s late; 503 + Retry-After)."""
    peer = ScriptedStow()
    if mode == "reject":
        peer.status, peer.body = 400, b'{"error": "unknown alert format"}'
    elif mode == "slow":
        peer.delay = 1.5
    elif mode == "busy":
        peer.status, peer.headers = 503, {"Retry-After": "7"}
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


class Webhook:
    @asynccontextmanager
    async def peer(self, mode: str, tmp: Path) -> AsyncIterator[Live]:
        async with scripted_http(mode) as http:
            url = f"{http.url}/studies" if mode != "down" else f"http://127.0.0.1:{free_port()}/"
            dest = make("webhook", url=url, timeout_secs=0.3 if mode == "slow" else 30)

            async def held() -> int:
                return len(http.requests)

            try:
                yield Live(
                    dest, same(b'{"alert": "contract"}'), held, reason="unknown alert format"
                )
            finally:
                await dest.close()


@asynccontextmanager
async def orthanc(tmp: Path) -> AsyncIterator[Orthanc]:
    pacs = Orthanc(tmp / "orthanc")
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


def instances_in(pacs: Orthanc) -> Callable[[], Awaitable[int]]:
    async def held() -> int:
        return len(await pacs.request("GET", "/instances"))

    return held


class Dicom:
    @asynccontextmanager
    async def peer(self, mode: str, tmp: Path) -> AsyncIterator[Live]:
        if mode in ("ok", "down"):
            async with orthanc(tmp) as pacs:
                port = pacs.dicom_port if mode == "ok" else free_port()
                dest = make(
                    "dicom", endpoint=f"127.0.0.1:{port}", called_ae=pacs.aet, timeout_secs=10
                )
                try:
                    yield Live(dest, sr_payloads(tmp), instances_in(pacs))
                finally:
                    await dest.close()
            return
        # A PACS that refuses (0xC000) or stalls on demand: the scripted pynetdicom SCP.
        scp = ScriptedSCP(
            status=0xC000 if mode == "reject" else 0x0000,
            comment="contract refusal",
            delay=3.0 if mode == "slow" else 0.0,
        )
        dest = make(
            "dicom",
            endpoint=f"127.0.0.1:{scp.port}",
            called_ae="PACS",
            timeout_secs=1 if mode == "slow" else 10,
        )

        async def held() -> int:
            return len(scp.received)

        try:
            yield Live(dest, sr_payloads(tmp), held, reason="0xC000")
        finally:
            await dest.close()
            scp.stop()


class Stow:
    @asynccontextmanager
    async def peer(self, mode: str, tmp: Path) -> AsyncIterator[Live]:
        if mode in ("ok", "down", "reject"):
            async with orthanc(tmp) as pacs:
                url = pacs.dicomweb if mode != "down" else f"http://127.0.0.1:{free_port()}"
                dest = make("dicomweb_stow", url=url, timeout_secs=10)
                try:
                    yield Live(
                        dest,
                        sr_payloads(tmp, broken=mode == "reject"),
                        instances_in(pacs),
                        reason="0xC000",
                    )
                finally:
                    await dest.close()
            return
        async with scripted_http(mode) as http:  # Orthanc cannot be made slow or busy
            dest = make("dicomweb_stow", url=http.url, timeout_secs=0.3 if mode == "slow" else 30)

            async def held() -> int:
                return len(http.requests)

            try:
                yield Live(dest, sr_payloads(tmp), held)
            finally:
                await dest.close()


KINDS: dict[str, Kind] = {
    "mllp": Mllp(),
    "file": File(),
    "fhir_rest": FhirRest(),
    "webhook": Webhook(),
    "dicom": Dicom(),
    "dicomweb_stow": Stow(),
}


# -- the cases ------------------------------------------------------------------------------

REF = DeliveryRef(1, 1)
REF2 = DeliveryRef(2, 2)


async def case_send(kind: Kind, tmp: Path) -> None:
    async with kind.peer("ok", tmp) as live:
        answer = await live.dest.send(live.payload(), REF)
        assert isinstance(answer, bytes) and answer
        assert await live.held() == 1


async def case_peer_down(kind: Kind, tmp: Path) -> None:
    async with kind.peer("down", tmp) as live:
        with pytest.raises(TransientDeliveryError) as caught:
            await live.dest.send(live.payload(), REF)
        assert not isinstance(caught.value, PermanentDeliveryError)


async def case_peer_rejects(kind: Kind, tmp: Path) -> None:
    async with kind.peer("reject", tmp) as live:
        with pytest.raises(PermanentDeliveryError) as caught:
            await live.dest.send(live.payload(), REF)
        assert live.reason in str(caught.value)
        if isinstance(caught.value, PeerRejected):
            assert live.reason in caught.value.reason


async def case_slow_peer(kind: Kind, tmp: Path) -> None:
    async with kind.peer("slow", tmp) as live:
        with pytest.raises(PeerTimeout):
            await live.dest.send(live.payload(), REF)


async def case_busy_peer(kind: Kind, tmp: Path) -> None:
    async with kind.peer("busy", tmp) as live:
        with pytest.raises(RetryLater) as caught:
            await live.dest.send(live.payload(), REF)
        assert caught.value.retry_after == 7.0


async def case_reopen(kind: Kind, tmp: Path) -> None:
    async with kind.peer("ok", tmp) as live:
        await live.dest.connect()
        await live.dest.send(live.payload(), REF)
        await live.dest.close()
        await live.dest.send(live.payload(), DeliveryRef(1, 2))
        assert await live.held() == 2


async def case_batch(kind: Kind, tmp: Path) -> None:
    async with kind.peer("ok", tmp) as live:
        items = [(live.payload(), DeliveryRef(1, i)) for i in (1, 2, 3)]
        sent = await live.dest.send_batch(items)
        assert sent.error is None
        assert len(sent.responses) == 3 and all(isinstance(r, bytes) and r for r in sent.responses)
        assert await live.held() == 3


async def case_batch_stops(kind: Kind, tmp: Path) -> None:
    async with kind.peer("reject", tmp) as live:
        before = await live.held()
        sent = await live.dest.send_batch([(live.payload(), REF), (live.payload(), REF2)])
        assert sent.responses == []
        assert isinstance(sent.error, PermanentDeliveryError)
        assert live.reason in str(sent.error)
        assert await live.held() - before <= 1  # the refused one at most: the next not tried


async def case_batch_peer_down(kind: Kind, tmp: Path) -> None:
    async with kind.peer("down", tmp) as live:
        sent = await live.dest.send_batch([(live.payload(), REF), (live.payload(), REF2)])
        assert sent.responses == []
        assert isinstance(sent.error, TransientDeliveryError)
        assert not isinstance(sent.error, PermanentDeliveryError)


RUN: dict[str, Callable[[Kind, Path], Awaitable[None]]] = {
    "send": case_send,
    "peer_down": case_peer_down,
    "peer_rejects": case_peer_rejects,
    "slow_peer": case_slow_peer,
    "busy_peer": case_busy_peer,
    "reopen": case_reopen,
    "batch": case_batch,
    "batch_stops": case_batch_stops,
    "batch_peer_down": case_batch_peer_down,
}


def matrix() -> list[Any]:
    params = []
    for type_name in sorted(KINDS):
        for case in CASES:
            if (type_name, case) in NOT_APPLICABLE:
                continue
            refused = type_name == "dicom" and case in ("peer_down", "batch_peer_down")
            params.append(
                pytest.param(
                    type_name,
                    case,
                    id=f"{type_name}-{case}",
                    marks=[REFUSED_SOCKET] if refused else [],
                )
            )
    return params


def test_every_registered_destination_type_and_case_is_run_or_explained() -> None:
    assert set(KINDS) == registry.type_names("destination")
    assert set(RUN) == set(CASES)
    for (type_name, case), reason in NOT_APPLICABLE.items():
        assert type_name in KINDS and case in CASES and reason


def test_every_destination_has_the_whole_contract(tmp_path: Path) -> None:
    configs = {
        "mllp": {"endpoint": "127.0.0.1:1"},
        "file": {"directory": str(tmp_path)},
        "fhir_rest": {"base_url": "http://127.0.0.1:1"},
        "webhook": {"url": "http://127.0.0.1:1/"},
        "dicom": {"endpoint": "127.0.0.1:1", "called_ae": "PACS"},
        "dicomweb_stow": {"url": "http://127.0.0.1:1"},
    }
    assert set(configs) == registry.type_names("destination")
    for type_name, config in configs.items():
        dest = make(type_name, **config)
        for method in ("connect", "send", "send_batch", "close"):
            assert callable(getattr(dest, method)), (type_name, method)
        assert 0 < dest.retry_initial_secs <= dest.retry_max_secs, type_name
        assert dest.max_batch >= 1, type_name


@pytest.mark.parametrize(("type_name", "case"), matrix())
async def test_the_destination_keeps_the_contract(
    type_name: str, case: str, tmp_path: Path
) -> None:
    await RUN[case](KINDS[type_name], tmp_path)
