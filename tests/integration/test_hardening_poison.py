"""Poison messages: one message never stops a destination (issue 12, finding 2).

The review sent a 300-character MSH-10 to the file destination, which named files after
MSH-10: ENAMETOOLONG was taken for an outage and retried at the head of the queue for
ever, 50 messages piled up behind it, ``/ready`` said ready and nothing could skip it.
Here: files are named by our ids and never overwritten; a deterministic failure ends its
delivery as ERROR with the reason while the queue moves on; a transient one keeps its
place; a stalled head shows in ``/ready`` and ``/metrics`` (clock injected, no sleeping);
an operator skips, cancels or retries a delivery from the API or from the CLI of another
process, audited. Store-level rules run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import hl7
import pytest

from bench.hl7gen import adt_a01
from channels.mllp.client import MLLPClient
from engine import outfiles
from engine.admin.audit import AuditLog
from engine.config.schema import lint_text
from engine.errors import PeerUnavailable, PermanentDeliveryError
from engine.flow.runtime import Engine
from engine.model import DeliveryStatus, Status
from engine.outfiles import os_delivery_error, write_new
from engine.store.base import NewMessage, Outcome, open_store
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.header import parse_header
from mappings.hl7v2.text import normalise
from tests.conftest import REPO, make_config, wait_for
from tests.e2e.support import Api, admin_environment, base_url, write_users_file
from tests.fixtures.peers import HL7Sink

LONG_ID = "L" * 300


class StickySink(HL7Sink):
    """A real MLLP peer (python-hl7) that answers AA, except: while ``refuse`` is set, a
    message whose MSH-10 starts with ``STUCK`` gets its connection dropped (a transient
    failure, retried for ever); with ``cut_ids``, MSA-2 echoes MSH-10 cut to 20 characters
    (HL7 2.3's ST(20)), as some real systems do."""

    def __init__(self, cut_ids: bool = False) -> None:
        super().__init__()
        self.refuse = True
        self.cut_ids = cut_ids
        self.refused = 0

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                control_id = str(msg.segment("MSH")(10))
                if self.refuse and control_id.startswith("STUCK"):
                    self.refused += 1
                    break
                self.received.append(normalise(str(msg).encode("latin-1")))
                self.control_ids.append(control_id)
                ack = msg.create_ack("AA", message_id=f"SINK{len(self.received)}")
                if self.cut_ids:
                    ack = hl7.parse(str(ack).replace(control_id, control_id[:20]))
                writer.writemessage(ack)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def sticky() -> AsyncIterator[StickySink]:
    s = StickySink()
    await s.start()
    yield s
    await s.stop()


def forwarding(db_url: str, destination: str, extra: str = "") -> str:
    return f"""
[store]
url = "{db_url}"
{extra}
[[channel]]
name = "ris"
source = {{ type = "mllp", listen = "127.0.0.1:0" }}
forward_to = ["out"]
[[channel]]
name = "out"
destination = {{ {destination} }}
"""


def mllp_out(endpoint: str) -> str:
    return (f'type = "mllp", endpoint = "{endpoint}", retry_initial_secs = 0.05, '
            "retry_max_secs = 0.2, ack_timeout_secs = 5")


async def send_all(address: tuple[str, int], ids: list[str]) -> None:
    client = MLLPClient(*address, ack_timeout=20)
    try:
        for i, cid in enumerate(ids):
            code = read_ack(await client.send(adt_a01(cid, patient_id=f"P{i % 5}")))[0]
            assert code == "AA", cid
    finally:
        await client.close()


async def delivery_states(store: Any, n_messages: int) -> list[tuple[str, str, str | None]]:
    """(MSH-10, delivery status, error) for messages 1..n, in arrival order."""
    out = []
    for mid in range(1, n_messages + 1):
        msg, (delivery,) = await store.get_message(mid)
        out.append((msg.control_id, str(delivery.status), delivery.error))
    return out


async def all_final(store: Any, n: int) -> bool:
    counts = await store.counts()
    return counts.get(("ris", "SENT"), 0) + counts.get(("ris", "ERROR"), 0) == n


def archived_ids(folder: Path) -> list[str]:
    """MSH-10 of each archive file, in file name order; the write times never go back."""
    files = sorted(folder.glob("*.hl7"))
    times = [f.stat().st_mtime_ns for f in files]
    assert times == sorted(times), "files were not written in queue order"
    return [parse_header(f.read_bytes()).control_id for f in files]


# -- the review's scenario, on the file destination -----------------------------------------

async def test_the_reviews_300_character_msh10_is_archived_and_the_50_behind_it_follow_in_order(
        engine_factory: Any, db_url: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    engine = await engine_factory(forwarding(db_url, f'type = "file", directory = "{archive}"'))
    ids = [LONG_ID] + [f"N{i}" for i in range(50)]
    await send_all(engine.address("ris"), ids)
    await wait_for(lambda: all_final(engine.store, 51), timeout=60)
    states = await delivery_states(engine.store, 51)
    assert [s[1] for s in states] == ["SENT"] * 51
    assert archived_ids(archive) == ids  # named by our ids: the long MSH-10 is no file name
    assert all(len(f.name) < 40 for f in archive.iterdir())


async def test_repeated_control_ids_never_overwrite_an_earlier_archive_file(
        engine_factory: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    engine = await engine_factory(forwarding(f"sqlite:///{tmp_path / 'rb.db'}",
                                             f'type = "file", directory = "{archive}"'))
    await send_all(engine.address("ris"), ["SAME", "SAME", "SAME"])
    await wait_for(lambda: all_final(engine.store, 3))
    files = sorted(archive.glob("*.hl7"))
    assert len(files) == 3 and len({f.read_bytes() for f in files}) == 3  # patients differ


async def test_a_file_the_file_system_refuses_ends_error_with_the_reason_and_the_50_behind_follow(
        engine_factory: Any, db_url: str, tmp_path: Path, monkeypatch: Any) -> None:
    """ENAMETOOLONG (what the review's name gave) is deterministic: ERROR, the queue moves on.
    Names no longer come from the message, so the OS answer is injected where the bytes are
    written (``engine.outfiles._write_tmp``, under ``send`` and ``send_batch`` alike)."""
    real = outfiles._write_tmp

    def refuse_poison(tmp: Path, payload: bytes) -> IO[bytes]:
        if b"POISON" in payload:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG),
                          str(tmp.parent / ("x" * 300)))
        return real(tmp, payload)

    monkeypatch.setattr(outfiles, "_write_tmp", refuse_poison)
    archive = tmp_path / "archive"
    engine = await engine_factory(forwarding(db_url, f'type = "file", directory = "{archive}"'))
    ids = ["POISON"] + [f"N{i}" for i in range(50)]
    await send_all(engine.address("ris"), ids)
    await wait_for(lambda: all_final(engine.store, 51), timeout=60)
    states = await delivery_states(engine.store, 51)
    assert states[0][1] == "ERROR" and "File name too long" in (states[0][2] or "")
    assert [s[1] for s in states[1:]] == ["SENT"] * 50
    assert archived_ids(archive) == ids[1:]
    msg, _ = await engine.store.get_message(1)
    assert msg.status == Status.ERROR and "File name too long" in (msg.error or "")


async def test_a_full_disk_keeps_the_head_queued_and_retried_then_all_follow_in_order(
        engine_factory: Any, tmp_path: Path, monkeypatch: Any) -> None:
    real, failures = outfiles._write_tmp, iter(range(3))

    def full_twice(tmp: Path, payload: bytes) -> IO[bytes]:
        if next(failures, None) is not None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tmp, payload)

    monkeypatch.setattr(outfiles, "_write_tmp", full_twice)
    monkeypatch.setattr("channels.file.FileDestination.retry_initial_secs", 0.05)
    archive = tmp_path / "archive"
    engine = await engine_factory(forwarding(f"sqlite:///{tmp_path / 'rb.db'}",
                                             f'type = "file", directory = "{archive}"'))
    ids = [f"D{i}" for i in range(5)]
    await send_all(engine.address("ris"), ids)
    await wait_for(lambda: all_final(engine.store, 5))
    assert [s[1] for s in await delivery_states(engine.store, 5)] == ["SENT"] * 5
    assert archived_ids(archive) == ids
    _, (head,) = await engine.store.get_message(1)
    assert head.attempts == 4 and engine.workers["out"].retries == 3


def test_os_errors_are_classified_once_by_errno(tmp_path: Path) -> None:
    for code in (errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        err = os_delivery_error(OSError(code, os.strerror(code)), tmp_path)
        assert isinstance(err, PermanentDeliveryError), errno.errorcode[code]
    for code in (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT, errno.EFBIG):
        err = os_delivery_error(OSError(code, os.strerror(code)), tmp_path)
        assert isinstance(err, PeerUnavailable), errno.errorcode[code]
    # EACCES: the file itself (the directory is writable) vs the place (it is not).
    denied = OSError(errno.EACCES, os.strerror(errno.EACCES))
    assert isinstance(os_delivery_error(denied, tmp_path), PermanentDeliveryError)
    assert isinstance(os_delivery_error(denied, tmp_path / "gone"), PeerUnavailable)
    assert "Permission denied" in str(os_delivery_error(denied, tmp_path))


def test_write_new_never_replaces_a_file_and_a_resend_of_the_same_bytes_is_not_a_copy(
        tmp_path: Path) -> None:
    (tmp_path / "000001.hl7").write_bytes(b"someone else's file")
    first = write_new(tmp_path, "000001", ".hl7", b"ours", fsync=True)
    assert first.name == "000001.1.hl7"
    assert (tmp_path / "000001.hl7").read_bytes() == b"someone else's file"
    assert write_new(tmp_path, "000001", ".hl7", b"ours", fsync=True) == first  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000001.1.hl7", "000001.hl7"]
    assert (first.stat().st_mode & 0o777) == 0o600


# -- other destinations ---------------------------------------------------------------------

async def test_an_mllp_peer_that_cuts_msa2_fails_that_message_for_good_and_the_queue_moves_on(
        engine_factory: Any, db_url: str) -> None:
    sink = StickySink(cut_ids=True)
    await sink.start()
    try:
        engine = await engine_factory(forwarding(db_url, mllp_out(sink.endpoint)))
        ids = [LONG_ID] + [f"N{i}" for i in range(10)]
        await send_all(engine.address("ris"), ids)
        await wait_for(lambda: all_final(engine.store, 11), timeout=60)
        states = await delivery_states(engine.store, 11)
        assert states[0][1] == "ERROR" and "max_ack_mismatches" in (states[0][2] or "")
        assert [s[1] for s in states[1:]] == ["SENT"] * 10
        assert sink.control_ids[-10:] == ids[1:]  # after 3 tries of the long one, in order
    finally:
        await sink.stop()


async def test_an_mllp_answer_listed_in_retry_on_keeps_the_message_queued_until_the_peer_takes_it(
        engine_factory: Any, tmp_path: Path) -> None:
    sink = HL7Sink(answer="AE")
    await sink.start()
    try:
        engine = await engine_factory(forwarding(
            f"sqlite:///{tmp_path / 'rb.db'}", mllp_out(sink.endpoint) + ', retry_on = ["AE"]'))
        await send_all(engine.address("ris"), ["R1", "R2"])
        await wait_for(lambda: engine.workers["out"].retries >= 2)
        assert [s[1] for s in await delivery_states(engine.store, 2)] == ["QUEUED"] * 2
        sink.answer = "AA"
        await wait_for(lambda: all_final(engine.store, 2))
        assert [s[1] for s in await delivery_states(engine.store, 2)] == ["SENT"] * 2
        assert sink.control_ids[-2:] == ["R1", "R2"]
    finally:
        await sink.stop()


async def test_an_mllp_payload_holding_block_bytes_fails_at_once(engine_factory: Any,
                                                                 tmp_path: Path,
                                                                 sink: HL7Sink) -> None:
    engine = await engine_factory(forwarding(f"sqlite:///{tmp_path / 'rb.db'}",
                                             mllp_out(sink.endpoint)))
    store = engine.store
    mid = await store.insert_message(NewMessage("ris", 0.0, adt_a01("B1"),
                                                status=Status.TRANSFORMED))
    await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED, deliveries=[
        ("out", adt_a01("B1").replace(b"ADT", b"A\x1cT", 1))])])
    engine.workers["out"].wake()
    await wait_for(lambda: all_final(store, 1))
    (_, status, error), = await delivery_states(store, 1)
    assert status == "ERROR" and "MLLP block bytes" in (error or "") and not sink.received


# -- the store: operator actions and late outcomes, on SQLite and PostgreSQL -----------------

async def _queued(store: Any, destination: str, n: int) -> list[int]:
    ids = []
    for i in range(n):
        mid = await store.insert_message(NewMessage("ris", float(i), b"MSH|^~\\&|%d" % i,
                                                    status=Status.TRANSFORMED))
        await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED,
                                            deliveries=[(destination, b"p%d" % i)])])
        (d,) = (await store.get_message(mid))[1]
        ids.append(d.id)
    return ids


async def test_skip_retry_and_late_outcomes_follow_one_rule_on_both_stores(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        first, second, third = await _queued(store, "out", 3)
        assert await store.end_delivery(first, "SKIPPED by ann: bad name")
        assert not await store.end_delivery(first, "SKIPPED by bob: again")  # not QUEUED
        msg, (d,) = await store.get_message(1)
        assert d.status == DeliveryStatus.ERROR and d.error == "SKIPPED by ann: bad name"
        assert msg.status == Status.ERROR and msg.error == "SKIPPED by ann: bad name"
        assert [x.id for x in await store.next_deliveries("out", 10)] == [second, third]
        # A late failure of the worker does not overwrite the operator's decision...
        await store.record_attempt(d, "connection refused")
        await store.finish_delivery(d, DeliveryStatus.ERROR, None, "timeout")
        assert (await store.get_delivery(first)).error == "SKIPPED by ann: bad name"
        # ...and a retry puts it back in its place: it is sent next.
        assert await store.requeue_delivery(first, "RETRY ASKED by ann: fixed")
        assert (await store.get_message(1))[0].status == Status.QUEUED
        assert [x.id for x in await store.next_deliveries("out", 10)] == [first, second, third]
        # A late SENT stands whatever was decided: the peer has it.
        assert await store.end_delivery(second, "CANCELLED by ann: test message")
        _, (d2,) = await store.get_message(2)
        await store.finish_delivery(d2, DeliveryStatus.SENT, b"ACK", None)
        assert (await store.get_message(2))[0].status == Status.SENT
        listed = await store.list_deliveries("out", DeliveryStatus.QUEUED)
        assert [x.id for x in listed] == [first, third]
        assert await store.delivery_status(second) == DeliveryStatus.SENT
        assert await store.get_delivery(10**9) is None and not await store.end_delivery(
            10**9, "x")
    finally:
        await store.close()


# -- stalled queues, and the operator's skip through the API -------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def admin_engine_with_clock(tmp_path: Path, sticky: StickySink
                                  ) -> AsyncIterator[tuple[Engine, Api, Clock]]:
    clock = Clock()
    text = forwarding(f"sqlite:///{tmp_path / 'rb.db'}", mllp_out(sticky.endpoint),
                      extra=f'[engine]\ndata_dir = "{tmp_path / "var"}"\n'
                            "stalled_queue_secs = 300\n[admin]\nlisten = \"127.0.0.1:0\"\n"
                            "stats_interval_secs = 0.3\n")
    with admin_environment(write_users_file(tmp_path / "users.toml")):
        config, problems = lint_text(text, "test.toml")
        assert not problems and config is not None
        engine = Engine(config, clock=clock)
        await engine.start()
        api = Api(base_url(engine))
        try:
            yield engine, api, clock
        finally:
            await api.close()
            await engine.stop()


async def _metric(api: Api, name: str) -> float:
    status, text = await api.call("GET", "/metrics", "viewer")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(f'{name}{{channel="out"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


async def test_a_stalled_head_shows_in_ready_and_metrics_and_an_operator_skip_moves_the_queue(
        admin_engine_with_clock: tuple[Engine, Api, Clock], sticky: StickySink) -> None:
    engine, api, clock = admin_engine_with_clock
    await send_all(engine.address("ris"), ["STUCK1", "A1", "A2"])
    worker = engine.workers["out"]
    await wait_for(lambda: worker.head is not None and worker.retries >= 2)
    assert (await api.call("GET", "/ready"))[0] == 200
    clock.now += 299
    assert (await api.call("GET", "/ready"))[0] == 200  # not yet: 299 s < 300 s
    clock.now += 2
    status, body = await api.call("GET", "/ready")
    assert status == 503 and "destination:out" in body["down"]
    assert body["stalled"][0]["destination"] == "out" and body["stalled"][0]["message"] == 1
    assert await _metric(api, "radbridge_queue_stalled") == 1
    assert await _metric(api, "radbridge_queue_head_age_seconds") >= 301
    _, queues = await api.call("GET", "/api/queues", "analyst")
    (queue,) = queues["queues"]
    assert queue["stalled"] and queue["head"]["message"] == 1
    assert "lost" in queue["head"]["last_error"]
    head_id = queue["head"]["delivery"]

    assert (await api.call("POST", f"/api/deliveries/{head_id}/skip", "viewer",
                           json={"reason": "x"}))[0] == 403
    assert (await api.call("POST", f"/api/deliveries/{head_id}/skip", "analyst",
                           json={"reason": "  "}))[0] == 400
    status, after = await api.call("POST", f"/api/deliveries/{head_id}/skip", "analyst",
                                   json={"reason": "peer cannot take it, ticket 42"})
    assert status == 200 and after["status"] == "ERROR"
    assert after["error"] == "SKIPPED by analyst-token: peer cannot take it, ticket 42"
    await wait_for(lambda: sticky.control_ids == ["A1", "A2"])
    assert (await api.call("GET", "/ready"))[0] == 200 and await _metric(
        api, "radbridge_queue_stalled") == 0
    status, again = await api.call("POST", f"/api/deliveries/{head_id}/skip", "analyst",
                                   json={"reason": "twice"})
    assert status == 409 and "is ERROR" in again["error"]

    sticky.refuse = False  # the peer is fixed: retry the skipped one
    status, _ = await api.call("POST", f"/api/deliveries/{head_id}/retry", "admin",
                               json={"reason": "peer fixed"})
    assert status == 200
    await wait_for(lambda: sticky.control_ids == ["A1", "A2", "STUCK1"])
    await wait_for(lambda: all_final(engine.store, 3))
    entries = await engine.admin.state.audit.query(action="delivery.skip")
    assert [(e.user, e.target, e.detail["reason"]) for e in entries] == [
        ("analyst-token", str(head_id), "twice"),
        ("analyst-token", str(head_id), "peer cannot take it, ticket 42")]
    assert (await engine.admin.state.audit.query(action="delivery.retry"))[0].user == (
        "admin-token")


async def test_an_operator_cancels_a_queued_delivery_behind_a_stuck_head(
        admin_engine_with_clock: tuple[Engine, Api, Clock], sticky: StickySink) -> None:
    engine, api, _ = admin_engine_with_clock
    await send_all(engine.address("ris"), ["STUCK1", "C1", "C2"])
    worker = engine.workers["out"]
    await wait_for(lambda: worker.head is not None and worker.retries >= 1)
    await wait_for(lambda: _has_delivery(engine.store, 3))
    _, (c1,) = await engine.store.get_message(2)
    status, after = await api.call("POST", f"/api/deliveries/{c1.id}/cancel", "analyst",
                                   json={"reason": "test order"})
    assert status == 200 and after["error"].startswith("CANCELLED by analyst-token")
    sticky.refuse = False  # the head goes through by itself; C1 must not follow it
    await wait_for(lambda: all_final(engine.store, 3))
    assert sticky.control_ids == ["STUCK1", "C2"]


async def _has_delivery(store: Any, message_id: int) -> bool:
    found = await store.get_message(message_id)
    return found is not None and bool(found[1])


# -- the CLI, a separate process, against a running engine ----------------------------------

def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


async def test_the_cli_skips_the_stuck_head_of_a_running_engine_and_the_queue_moves_on(
        tmp_path: Path, engine_process: Any, cli_env: dict[str, str],
        sticky: StickySink) -> None:
    cfg = tmp_path / "channels.toml"
    cfg.write_text(forwarding(f"sqlite:///{tmp_path / 'rb.db'}", mllp_out(sticky.endpoint),
                              extra=f'[engine]\ndata_dir = "{tmp_path / "var"}"\n'))
    proc = engine_process(cfg)
    proc.start()
    await send_all(proc.addresses["ris"], ["STUCK1", "B1", "B2"])
    await wait_for(lambda: sticky.refused >= 2)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("deliveries", "--config", str(cfg), *args, env=cli_env)

    listed = await asyncio.to_thread(cli, "list", "out")
    assert listed.returncode == 0, listed.stderr
    head = listed.stdout.splitlines()[1].split()
    assert head[1] == "1" and head[2] == "QUEUED"  # message 1 is the head
    no_reason = await asyncio.to_thread(cli, "skip", head[0])
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    skipped = await asyncio.to_thread(cli, "skip", head[0], "--reason", "bad message",
                                      "--user", "ann")
    assert skipped.returncode == 0, skipped.stderr
    assert "SKIPPED by ann: bad message" in skipped.stdout
    await wait_for(lambda: sticky.control_ids == ["B1", "B2"])  # the running worker noticed
    twice = await asyncio.to_thread(cli, "skip", head[0], "--reason", "again")
    assert twice.returncode == 1 and twice.stderr.count("\n") == 1 and "is ERROR" in (
        twice.stderr)

    sticky.refuse = False
    retried = await asyncio.to_thread(cli, "retry", head[0], "--reason", "fixed",
                                      "--user", "ann")
    assert retried.returncode == 0, retried.stderr
    await wait_for(lambda: sticky.control_ids == ["B1", "B2", "STUCK1"])
    assert proc.terminate() == 0
    audit = AuditLog(tmp_path / "var" / "audit.db")
    await audit.open()
    try:
        entries = await audit.query(user="ann")
    finally:
        await audit.close()
    assert [(e.action, e.via, e.detail["reason"]) for e in entries] == [
        ("delivery.retry", "cli", "fixed"), ("delivery.skip", "cli", "bad message")]


def test_the_stalled_queue_setting_is_documented_and_linted() -> None:
    assert make_config("[engine]\nstalled_queue_secs = 60\n").engine.stalled_queue_secs == 60
    _, problems = lint_text("[engine]\nstalled_queue_secs = 0\n", "c.toml")
    assert [str(p) for p in problems] == [
        "c.toml:2: engine.stalled_queue_secs: Input should be greater than 0"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "stalled_queue_secs" in readme and "radbridge deliveries skip" in readme
