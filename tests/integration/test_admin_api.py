"""The admin API over real HTTP and MLLP on loopback: channels, queues, reload, health, metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.hl7gen import adt_a01, orm_o01
from channels.mllp.client import MLLPClient
from engine import metrics
from engine.errors import PeerUnavailable
from tests.conftest import wait_for
from tests.e2e.support import (
    Started,
    add_study,
    admin_engine,
    config_text,
    edit_config,
    send_hl7,
)

__all__ = ["admin_engine"]  # the fixture, imported for pytest


def _by_name(body: dict[str, object], name: str) -> dict[str, object]:
    return next(c for c in body["channels"] if c["name"] == name)  # type: ignore[index,union-attr]


async def test_the_channel_list_shows_counts_and_rates_of_live_traffic(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    for i in range(6):
        assert await send_hl7(engine, orm_o01(f"LIVE{i}")) in ("AA", "CA")
    assert await send_hl7(engine, b"not HL7 at all") == "AR"

    async def counted() -> bool:
        _, body = await api.call("GET", "/api/channels", "viewer")
        ris = _by_name(body, "ris")
        return ris["totals"]["received"] == 7 and ris["totals"]["sent"] == 6  # type: ignore[index]

    await wait_for(counted)
    _, body = await api.call("GET", "/api/channels", "viewer")
    ris, archive = _by_name(body, "ris"), _by_name(body, "archive")
    assert ris["totals"]["errored"] == 1 and ris["state"] == "running"  # type: ignore[index]
    assert ris["rates"]["received"] > 0 and ris["acks"]["AR"] == 1  # type: ignore[index]
    assert archive["totals"] == {"received": 6, "filtered": 0, "queued": 0, "sent": 6,
                                 "errored": 0}
    status, stats = await api.call("GET", "/api/stats", "radiologist")
    assert status == 200 and stats["channels"]["ris"]["totals"]["received"] == 7


async def test_stopping_one_channel_leaves_the_others_running(admin_engine: Started) -> None:
    engine, api = await admin_engine()
    spare_host, spare_port = engine.address("spare")
    status, body = await api.call("POST", "/api/channels/spare/stop", "analyst")
    assert status == 200 and body["state"] == "stopped" and body["address"] is None
    with pytest.raises(PeerUnavailable):
        await MLLPClient(spare_host, spare_port, ack_timeout=2).send(adt_a01("X"))
    assert await send_hl7(engine, adt_a01("STILL1")) == "AA"  # ris never noticed
    status, body = await api.call("POST", "/api/channels/spare/start", "admin")
    assert status == 200 and body["state"] == "running"
    assert await send_hl7(engine, adt_a01("BACK1"), channel="spare") == "AA"


async def test_redeploying_a_channel_gives_it_a_new_listener_and_keeps_its_messages(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, api = await admin_engine()
    before = engine.sources["ris"]
    assert await send_hl7(engine, orm_o01("R1")) in ("AA", "CA")
    status, body = await api.call("POST", "/api/channels/ris/redeploy", "analyst")
    assert status == 200 and body["state"] == "running"
    assert engine.sources["ris"] is not before
    assert await send_hl7(engine, orm_o01("R2")) in ("AA", "CA")
    await wait_for(lambda: len(list((tmp_path / "archive").glob("*"))) == 2)


async def test_a_paused_queue_keeps_messages_queued_until_it_is_resumed(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, api = await admin_engine()
    status, body = await api.call("POST", "/api/queues/archive/pause", "analyst")
    assert status == 200 and body["paused"] is True
    for i in range(3):
        await send_hl7(engine, orm_o01(f"Q{i}"))

    async def depth(n: int) -> bool:
        await engine.admin.state.sampler.refresh()
        _, q = await api.call("GET", "/api/queues", "viewer")
        return q["queues"][0]["depth"] == n  # type: ignore[no-any-return]

    await wait_for(lambda: depth(3))
    _, q = await api.call("GET", "/api/queues", "viewer")
    assert q["queues"][0]["oldest_age_secs"] >= 0 and not list((tmp_path / "archive").glob("*"))
    status, body = await api.call("POST", "/api/queues/archive/resume", "admin")
    assert status == 200 and body["paused"] is False
    await wait_for(lambda: len(list((tmp_path / "archive").glob("*"))) == 3)
    await wait_for(lambda: depth(0))


async def test_an_unknown_channel_or_queue_is_404_and_an_impossible_action_409(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    assert (await api.call("POST", "/api/channels/nope/stop", "admin"))[0] == 404
    assert (await api.call("GET", "/api/channels/nope", "admin"))[0] == 404
    status, body = await api.call("POST", "/api/queues/ris/pause", "admin")  # not a destination
    assert status == 409 and "nothing to pause" in body["error"]


async def test_reload_lints_first_and_changes_nothing_when_the_file_has_problems(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, api = await admin_engine()
    sources = dict(engine.sources)
    edit_config(engine, lambda t: t + '\n[[channel]]\nname = "Bad Name"\nsource = 3\n')
    status, body = await api.call("POST", "/api/config/reload", "analyst", json={})
    assert status == 422 and body["problems"]
    assert all(":" in p and "channels.toml:" in p for p in body["problems"])
    assert engine.sources == sources


async def test_reload_restarts_only_the_channels_whose_configuration_changed(
        admin_engine: Started, tmp_path: Path) -> None:
    engine, api = await admin_engine()
    ris, spare = engine.sources["ris"], engine.sources["spare"]
    extra = '\n[[channel]]\nname = "extra"\nsource = { type = "mllp", listen = "127.0.0.1:0" }\n'
    text = edit_config(engine, lambda t: t.replace(
        'name = "spare"\n', 'name = "spare"\naccept = ["ADT^A01"]\n') + extra)
    status, plan = await api.call("POST", "/api/config/reload", "admin", json={"dry_run": True})
    assert status == 200 and plan["applied"] is False and engine.sources["spare"] is spare
    assert (plan["changed"], plan["added"]) == (["spare"], ["extra"])
    status, plan = await api.call("POST", "/api/config/reload", "admin", json={})
    assert status == 200 and plan["applied"] and not plan["failed"]
    assert engine.sources["ris"] is ris and engine.sources["spare"] is not spare
    assert await send_hl7(engine, adt_a01("NEW1"), channel="extra") == "AA"
    edit_config(engine, lambda _: text)  # back: "extra" goes away
    status, plan = await api.call("POST", "/api/config/reload", "analyst", json={})
    assert plan["removed"] == ["extra"] and "extra" not in engine.sources


async def test_reload_names_sections_that_need_a_restart(admin_engine: Started,
                                                         tmp_path: Path) -> None:
    engine, api = await admin_engine()
    edit_config(engine, lambda t: t.replace("stats_interval_secs = 0.3",
                                            "stats_interval_secs = 0.4"))
    status, plan = await api.call("POST", "/api/config/reload", "admin", json={})
    assert status == 200 and plan["restart_required"] == ["admin"]
    assert engine.config.admin.stats_interval_secs == 0.3


async def test_ready_answers_503_naming_the_parts_that_are_down(admin_engine: Started) -> None:
    engine, api = await admin_engine()
    status, body = await api.call("GET", "/ready")
    assert (status, body["down"]) == (200, [])
    for task in asyncio.all_tasks():
        if task.get_name() == "pipeline:ris":
            task.cancel()
    await asyncio.sleep(0.05)
    status, body = await api.call("GET", "/ready")
    assert status == 503 and body["down"] == ["channel:ris"]
    await api.call("POST", "/api/channels/ris/redeploy", "admin")
    assert (await api.call("GET", "/ready"))[0] == 200
    await engine.store.close()
    status, body = await api.call("GET", "/ready")
    assert status == 503 and "store" in body["down"]


async def test_an_operator_stopped_channel_does_not_make_the_engine_unready(
        admin_engine: Started) -> None:
    _, api = await admin_engine()
    await api.call("POST", "/api/channels/spare/stop", "admin")
    assert (await api.call("GET", "/ready"))[0] == 200


async def test_metrics_parse_with_the_prometheus_parser_and_carry_every_family(
        admin_engine: Started) -> None:
    engine, api = await admin_engine()
    for i in range(3):
        await send_hl7(engine, orm_o01(f"M{i}"))
    await add_study(engine, "1.2.826.0.1.3680043.10.77.1", None, None)
    await engine.assembler.complete("1.2.826.0.1.3680043.10.77.1")
    metrics.observe_ack("ris", 0.002)
    metrics.observe_inference("cxr-triage", "cpu", 0.3)
    await wait_for(lambda: engine.pipelines["ris"].processed == 3)
    await engine.admin.state.sampler.refresh()
    status, text = await api.call("GET", "/metrics", "viewer")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("radbridge_channel_received", "radbridge_channel_acks",
                 "radbridge_pipeline_processed", "radbridge_delivery_sent",
                 "radbridge_queue_depth", "radbridge_messages", "radbridge_studies",
                 "radbridge_ack_latency_seconds", "radbridge_inference_latency_seconds",
                 "radbridge_study_completion_lag_seconds", "radbridge_channel_up"):
        assert name in families, name
    received = {s.labels["channel"]: s.value for s in families["radbridge_channel_received"]
                .samples if s.name.endswith("_total")}
    assert received["ris"] == 3
    lag = [s for s in families["radbridge_study_completion_lag_seconds"].samples
           if s.name.endswith("_count") and s.labels["channel"] == "pacs"]
    assert lag and lag[0].value >= 1
    assert families["radbridge_channel_up"].type == "gauge"


async def test_metrics_can_be_public_when_configured(admin_engine: Started,
                                                     tmp_path: Path) -> None:
    _, api = await admin_engine(config_text(tmp_path, "metrics_public = true"))
    status, text = await api.call("GET", "/metrics")
    assert status == 200 and "radbridge_channel_up" in text
    assert (await api.call("GET", "/api/channels"))[0] == 401
