"""What a viewer may see of HL7 content, as an allow-list: every field not listed is masked.

The message viewer (``mappings.hl7v2.view``) applies it; the JSON allow-lists of the admin
API are ``engine.admin.phi``. MSH-10 (control id) is left out: some senders use the
accession or order number there.
"""

from __future__ import annotations

#: segment -> fields (1-based) shown in clear; every other field is masked.
HL7_CLEAR: dict[str, frozenset[int]] = {
    # MSH-10 (control id) is left out: some senders use the accession or order number there.
    "MSH": frozenset({1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 15, 16, 17, 18, 19, 20}),
    "FHS": frozenset({1, 2, 3, 4, 5, 6, 7}),
    "BHS": frozenset({1, 2, 3, 4, 5, 6, 7}),
    "FTS": frozenset({1}),
    "BTS": frozenset({1}),
    "EVN": frozenset({1, 2, 3, 4, 7}),
    "PID": frozenset({1}),
    "NK1": frozenset({1}),
    "PV1": frozenset({1, 2, 4, 10, 18}),
    "ORC": frozenset({1, 5, 6, 25, 29}),
    "OBR": frozenset({1, 4, 5, 11, 24, 25, 30, 44, 45}),
    "TQ1": frozenset({1, 2, 3, 9, 12}),
    "IPC": frozenset({3, 5, 6, 7, 9}),
    "OBX": frozenset({1, 2, 3, 4, 6, 7, 8, 9, 11, 17, 18}),
    "NTE": frozenset({1, 2, 4}),
    "MSA": frozenset({1, 4, 5}),
    "ERR": frozenset({1, 2, 3, 4, 5}),
}


def hl7_field_is_phi(segment: str, index: int) -> bool:
    """Whether field *index* of *segment* is masked for viewers (not on the allow-list)."""
    return index not in HL7_CLEAR.get(segment, frozenset())
