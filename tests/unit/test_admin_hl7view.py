"""The message viewer's model: HL7 segment by segment with field names, and PHI masking."""

from __future__ import annotations

import importlib
import re

import pytest

from bench.hl7gen import orm_o01
from engine.admin.phi import MASK
from mappings.hl7v2.fields import FIELD_NAMES, field_name
from mappings.hl7v2.phi import hl7_field_is_phi
from mappings.hl7v2.view import mask_text, parse_segments, render_layer

REQUIRED = ("MSH", "PID", "PV1", "ORC", "OBR", "OBX", "MSA", "ERR", "EVN", "MRG", "NTE", "TQ1",
            "IPC")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def test_the_table_names_every_field_of_the_common_segments() -> None:
    assert set(REQUIRED) <= set(FIELD_NAMES)
    assert field_name("PID", 5) == "Patient Name"
    assert field_name("MSH", 10) == "Message Control ID"
    assert field_name("OBR", 4) == "Universal Service Identifier"
    assert field_name("IPC", 1) == "Accession Identifier"
    assert field_name("MSA", 1) == "Acknowledgment Code"
    assert field_name("ERR", 3) == "HL7 Error Code"
    assert field_name("PID", 99) is None and field_name("ZDS", 1) is None


@pytest.mark.parametrize("segment", REQUIRED)
def test_the_table_agrees_with_hl7apy(segment: str) -> None:
    base = importlib.import_module("hl7apy.v2_5_1.segments").SEGMENTS[segment][1]
    later = importlib.import_module("hl7apy.v2_7.segments").SEGMENTS[segment][1]
    names = [f[1][3] for f in base] + [f[1][3] for f in later][len(base):]
    ours = FIELD_NAMES[segment]
    assert len(ours) == len(names)
    for i, (mine, theirs) in enumerate(zip(ours, names, strict=True), start=1):
        theirs = re.sub(rf"_{segment}$", "", theirs)
        assert _norm(mine) == _norm(theirs), f"{segment}-{i}"


def test_segments_come_with_numbered_named_fields_and_msh_counts_its_separator() -> None:
    segments = parse_segments(orm_o01("C1").decode())
    msh = {f["n"]: f for f in segments[0]["fields"]}
    assert segments[0]["id"] == "MSH" and msh[1]["value"] == "|" and msh[2]["value"] == "^~\\&"
    assert msh[9] == {"n": 9, "name": "Message Type", "value": "ORM^O01^ORM_O01"}
    obr = next(s for s in segments if s["id"] == "OBR")
    assert {f["n"]: f["name"] for f in obr["fields"]}[4] == "Universal Service Identifier"
    zds = next(s for s in segments if s["id"] == "ZDS")
    assert zds["fields"][0]["name"] == ""  # a Z-segment: listed, unnamed


def test_other_separators_and_line_endings_are_read_leniently() -> None:
    text = "MSH#^~\\&#A#B#C#D#2026##ADT^A01#X1#P#2.5\nPID#1##M1##DOE^J\n\nZZZ#a"
    segments = parse_segments(text)
    assert [s["id"] for s in segments] == ["MSH", "PID", "ZZZ"]
    assert segments[0]["fields"][0]["value"] == "#"
    assert {f["n"]: f["value"] for f in segments[1]["fields"]}[5] == "DOE^J"


def test_masking_replaces_patient_fields_and_keeps_the_header() -> None:
    raw = orm_o01("C9", patient_id="MRN777", accession="ACC777")
    masked = render_layer("raw", raw, masked=True)
    assert "MRN777" not in masked["text"] and "ACC777" not in masked["text"]
    assert masked["text"].startswith("MSH|^~\\&|") and "ORM^O01" in masked["text"]
    pid = next(s for s in masked["segments"] if s["id"] == "PID")
    values = {f["n"]: f["value"] for f in pid["fields"]}
    assert values[1] == "1" and all(v == MASK for n, v in values.items() if n != 1)
    assert render_layer("raw", raw, masked=False)["text"].count("MRN777") >= 1


def test_the_masked_text_keeps_every_field_position() -> None:
    text = "MSH|^~\\&|A|B|C|D|2026||ADT^A01|X|P|2.5\rPID|1||M1||DOE^J||19800101|F"
    assert mask_text(text).split("\r")[1] == "PID|1||***||***||***|***"


@pytest.mark.parametrize("segment,field,phi", [
    ("MSH", 9, False), ("MSH", 10, True), ("PID", 1, False), ("PID", 5, True), ("PID", 3, True),
    ("OBR", 4, False), ("OBR", 12, True), ("OBR", 18, True), ("ORC", 1, False), ("ORC", 2, True),
    ("IPC", 1, True), ("OBX", 5, True), ("NTE", 3, True), ("MRG", 1, True),
    ("ZDS", 1, True), ("XYZ", 1, True), ("MSA", 2, True), ("PD1", 1, True), ("NK1", 1, False),
])
def test_phi_fields_are_known_and_unknown_segments_are_masked_whole(segment: str, field: int,
                                                                     phi: bool) -> None:
    assert hl7_field_is_phi(segment, field) is phi


def test_content_that_is_not_hl7_is_withheld_whole_from_viewers() -> None:
    body = b'{"resourceType": "Patient", "name": [{"family": "Doe"}]}'
    assert render_layer("mapped", body, masked=True)["text"] == f"[withheld: {len(body)} bytes]"
    shown = render_layer("mapped", body, masked=False)
    assert shown["format"] == "json" and "Doe" in shown["text"] and shown["segments"] is None


def test_the_declared_character_set_decodes_the_layer() -> None:
    raw = "MSH|^~\\&|A|B|C|D|2026||ADT^A01|X|P|2.5|||||8859/1\rPID|1||M||MÜLLER^J".encode(
        "latin-1")
    pid = render_layer("raw", raw, masked=False)["segments"][1]
    assert {f["n"]: f["value"] for f in pid["fields"]}[5] == "MÜLLER^J"
