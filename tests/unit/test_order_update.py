"""AI-raised priority -> order change (ORC-1 XO) for the RIS: ORM^O01 / OMI^O23, ORC-7.6 / TQ1-9.

Each update is read back with python-hl7 and with the engine's own inbound order mapping (the
same reading a RIS-facing radbridge applies), and checked against the report it came from."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from engine.results.model import AIReport
from mappings.hl7v2.order_update import build_order_update, check_structure
from mappings.hl7v2.orders import OrderEvent, map_message
from mappings.hl7v2.oru import OutboundInvalid
from tests.fixtures.reports import sample_report

REASON = "AI: Pneumothorax (p=0.93) | critical"
VARIANTS = [("ORM^O01", "ORC-7.6"), ("ORM^O01", "TQ1-9"), ("OMI^O23", "ORC-7.6"),
            ("OMI^O23", "TQ1-9")]


@pytest.fixture
def report(tmp_path: Path) -> AIReport:
    return sample_report(tmp_path)


def parse(raw: bytes) -> hl7.Message:
    assert b"\n" not in raw
    return hl7.parse(raw.decode("ascii"))


def fld(seg: hl7.Segment, n: int) -> str:
    return str(seg(n)) if len(seg) > n else ""


def names(msg: hl7.Message) -> list[str]:
    return [str(seg[0]) for seg in msg]


@pytest.mark.parametrize(("message", "priority_field"), VARIANTS)
@pytest.mark.parametrize("priority", ["S", "A"])
def test_the_update_names_the_order_and_carries_the_priority(
        report: AIReport, message: str, priority_field: str, priority: str) -> None:
    raw = build_order_update(report, priority, REASON, message=message,
                             priority_field=priority_field)
    msg = parse(raw)
    order = report.order
    assert order is not None
    msh, orc, obr = msg.segment("MSH"), msg.segment("ORC"), msg.segment("OBR")
    assert fld(msh, 9) == f"{message}^{message.replace('^', '_')}"
    assert fld(msh, 10) == f"{report.report_id}-XO{priority}"
    assert [fld(orc, n) for n in (1, 2, 3)] == ["XO", order.placer, order.filler]
    assert [fld(obr, n) for n in (2, 3)] == [order.placer, order.filler]
    assert fld(obr, 4).split("^") == [order.procedure_code, order.procedure_text,
                                      order.procedure_system]
    assert (fld(obr, 18), fld(obr, 19)) == (report.accession, order.requested_procedure_id)
    if priority_field == "TQ1-9":
        assert fld(msg.segment("TQ1"), 9).split("^")[0] == priority
        assert fld(orc, 7) == "" and fld(obr, 27) == ""
        assert names(msg).index("TQ1") == names(msg).index("ORC") + 1
    else:
        assert "TQ1" not in names(msg)
        assert fld(orc, 7).split("^")[5] == priority == fld(obr, 27).split("^")[5]
    assert msg.unescape(fld(msg.segment("NTE"), 3)) == REASON
    assert fld(orc, 16).split("^")[0] == "AIPRIORITY"
    assert report.patient is not None
    assert fld(msg.segment("PID"), 3).split("^")[0] == report.patient.patient_id


@pytest.mark.parametrize(("message", "priority_field"), VARIANTS)
def test_radbridges_own_order_mapping_reads_the_update_back(
        report: AIReport, message: str, priority_field: str) -> None:
    event = map_message(build_order_update(report, "S", REASON, message=message,
                                           priority_field=priority_field))
    assert isinstance(event, OrderEvent) and event.message_type == message
    (order,) = event.orders
    assert report.order is not None
    assert (order.control, order.priority) == ("XO", "S")
    assert (order.placer_number, order.filler_number) == (report.order.placer,
                                                         report.order.filler)
    assert order.accession == report.accession
    if message == "OMI^O23":
        assert order.study_instance_uid == report.study_uid


@pytest.mark.parametrize("priority_field", ["ORC-7.6", "TQ1-9"])
def test_the_omi_carries_the_imaging_procedure_and_hl7apy_validates_it(
        report: AIReport, priority_field: str) -> None:
    raw = build_order_update(report, "A", REASON, message="OMI^O23",
                             priority_field=priority_field)
    ipc = parse(raw).segment("IPC")
    assert report.order is not None
    assert [fld(ipc, n) for n in (1, 2, 3)] == [report.accession,
                                                report.order.requested_procedure_id,
                                                report.study_uid]
    assert fld(ipc, 4) == report.order.requested_procedure_id  # no SPS id in an AI report
    assert fld(ipc, 5) == f"{report.modality}^^DCM"
    message = parse_message(raw.decode(), validation_level=VALIDATION_LEVEL.STRICT,
                            find_groups=True)
    assert message.validate()


def test_hl7apy_still_cannot_validate_an_orm_which_is_why_we_check_it_ourselves(
        report: AIReport) -> None:
    raw = build_order_update(report, "S", REASON)
    message = parse_message(raw.decode(), validation_level=VALIDATION_LEVEL.STRICT,
                            find_groups=True)
    with pytest.raises(Exception, match="Missing required child"):  # crs4/hl7apy#151
        message.validate()


def test_the_orm_can_be_sent_as_v231(report: AIReport) -> None:
    msg = parse(build_order_update(report, "S", REASON, version="2.3.1"))
    assert fld(msg.segment("MSH"), 9) == "ORM^O01"
    assert fld(msg.segment("MSH"), 12) == "2.3.1"


def test_the_same_report_and_priority_give_the_same_bytes(report: AIReport) -> None:
    again = AIReport.from_json(report.to_json())
    assert build_order_update(again, "S", REASON) == build_order_update(report, "S", REASON)
    assert build_order_update(report, "A", REASON) != build_order_update(report, "S", REASON)


@pytest.mark.parametrize(("kwargs", "location"), [
    ({"priority": "X"}, "ORC-7.6"),
    ({"message": "ORM^O02"}, "MSH-9"),
    ({"message": "OMI^O23", "version": "2.3.1"}, "MSH-12"),
    ({"priority_field": "TQ1-9", "version": "2.3.1"}, "MSH-12"),
    ({"version": "2.6"}, "MSH-12"),
])
def test_impossible_updates_are_refused(report: AIReport, kwargs: dict[str, str],
                                        location: str) -> None:
    args = {"priority": "S"} | kwargs
    priority = args.pop("priority")
    with pytest.raises(OutboundInvalid) as err:
        build_order_update(report, priority, REASON, **args)
    assert err.value.location == location


def test_an_update_for_an_order_the_ris_cannot_identify_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutboundInvalid) as err:
        build_order_update(sample_report(tmp_path, with_order=False), "S", REASON)
    assert err.value.location == "ORC-2"


def test_an_omi_without_requested_procedure_id_is_refused_by_hl7apy(report: AIReport) -> None:
    assert report.order is not None
    report.order.requested_procedure_id = None
    with pytest.raises(OutboundInvalid) as err:
        build_order_update(report, "S", REASON, message="OMI^O23")
    assert err.value.location is not None and err.value.location.startswith("IPC")


GOOD = "\r".join([
    "MSH|^~\\&|RADBRIDGE|RADBRIDGE|||20260101000000+0000||ORM^O01^ORM_O01|RB1R1-XOS|P|2.5.1",
    "ORC|XO|PL1|FI1||||^^^^^S",
    "OBR|1|PL1|FI1|71046^XR CHEST^CPT",
    "NTE|1|O|reason",
])


@pytest.mark.parametrize(("broken", "location"), [
    (GOOD.replace("\rOBR|1|PL1|FI1|71046^XR CHEST^CPT", ""), "OBR"),
    (GOOD.replace("ORC|XO", "ORC|XX"), "ORC-1"),
    (GOOD.replace("^^^^^S", "^^^^^R"), "ORC-7.6"),
    (GOOD.replace("71046^XR CHEST^CPT", ""), "OBR-4"),
    (GOOD + "\rIPC|A|B|C|D", "IPC"),
    (GOOD.replace("NTE|1|O|reason", "NTE|1|O|reason\rOBR|2|PL1|FI1|X"), "OBR"),
    (GOOD.replace("ORC|XO|PL1", "ORC|XO|" + "P" * 300), "ORC-2"),
])
def test_the_structural_check_names_what_is_wrong(broken: str, location: str) -> None:
    check_structure(GOOD, omi=False, priority="S", priority_field="ORC-7.6")
    with pytest.raises(OutboundInvalid) as err:
        check_structure(broken, omi=False, priority="S", priority_field="ORC-7.6")
    assert err.value.location == location
