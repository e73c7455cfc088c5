"""A built ORU^R01 and order update, sent by the real MLLP destination to a real listener
(python-hl7's MLLP server on loopback): ACKed AA for their own control id, received intact."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest

from channels.mllp.config import MLLPDestinationConfig
from channels.mllp.destination import MLLPDestination
from mappings.hl7v2.ack import read_ack
from mappings.hl7v2.order_update import build_order_update
from mappings.hl7v2.oru import build_oru
from tests.fixtures.peers import HL7Sink
from tests.fixtures.reports import sample_report


def destination(sink: HL7Sink) -> MLLPDestination:
    config = MLLPDestinationConfig.model_validate(
        {"type": "mllp", "endpoint": sink.endpoint, "ack_timeout_secs": 5})
    return MLLPDestination("ehr-results", config)


@pytest.mark.parametrize("version", ["2.5.1", "2.3.1"])
async def test_a_built_oru_is_acked_aa_and_received_intact(tmp_path: Path, sink: HL7Sink,
                                                           version: str) -> None:
    report = sample_report(tmp_path, demo=True)
    oru = build_oru(report, version=version, receiving_application="EHR")
    dest = destination(sink)
    await dest.connect()
    try:
        response = await dest.send(oru)
    finally:
        await dest.close()
    code, acked_id, _ = read_ack(response)
    assert (code, acked_id) == ("AA", f"{report.report_id}-ORU")
    assert sink.received == [oru]
    received = hl7.parse(sink.received[0].decode("ascii"))
    assert any("DEMO" in str(nte(3)) for nte in received.segments("NTE"))


async def test_results_and_an_order_update_share_one_connection(tmp_path: Path,
                                                                sink: HL7Sink) -> None:
    report = sample_report(tmp_path)
    messages = [build_oru(report),
                build_order_update(report, "S", "AI: critical finding", message="OMI^O23",
                                   priority_field="TQ1-9")]
    dest = destination(sink)
    await dest.connect()
    try:
        codes = [read_ack(await dest.send(m))[0] for m in messages]
    finally:
        await dest.close()
    assert codes == ["AA", "AA"]
    assert sink.received == messages
    assert sink.control_ids == [f"{report.report_id}-ORU", f"{report.report_id}-XOS"]
