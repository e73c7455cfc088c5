"""What counts as PHI in what the admin API shows, and how it is masked for viewers.

HL7 segments are masked field by field. A segment not listed is masked whole
(default deny: Z-segments and anything unexpected may carry identifiers); the
listed ones name the fields that hold identifiers, names, dates, addresses or
free text. Rows of the clinical tables mask their identifier columns. UIDs stay
visible: they are the keys the dashboard navigates by.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "***"
_EVERY = None  # every field (but a leading Set ID, see _SET_ID_FIRST)
_SET_ID_FIRST = frozenset({"PID", "NK1"})  # their field 1 is a Set ID (MRG-1, PD1-1 are not)

#: segment -> PHI fields (1-based); None: every field.
HL7_PHI: dict[str, frozenset[int] | None] = {
    "MSH": frozenset(),
    "FHS": frozenset(),
    "BHS": frozenset(),
    "FTS": frozenset(),
    "BTS": frozenset(),
    "MSA": frozenset(),
    "ERR": frozenset(),
    "EVN": frozenset({6}),
    "PID": _EVERY,
    "PD1": _EVERY,
    "MRG": _EVERY,
    "NK1": _EVERY,
    "PV1": frozenset({19, 44, 45, 50}),
    "ORC": frozenset({2, 3, 4, 7, 9, 15}),
    "OBR": frozenset({2, 3, 6, 7, 8, 13, 14, 18, 19, 20, 21, 22, 26, 27, 31, 36}),
    "TQ1": frozenset({7, 8}),
    "IPC": frozenset({1, 2, 3, 4}),
    "OBX": frozenset({5, 14, 19}),
    "NTE": frozenset({3}),
}

STUDY_PHI = ("accession", "patient_id", "issuer")
ORDER_PHI = ("patient_id", "issuer", "placer", "filler", "accession", "requested_procedure_id",
             "location")
CASE_PHI = ("accession", "patient_id")
MESSAGE_PHI = ("key",)


def hl7_field_is_phi(segment: str, index: int) -> bool:
    """Whether field *index* of *segment* is masked for viewers."""
    if segment not in HL7_PHI:
        return True  # default deny
    fields = HL7_PHI[segment]
    if fields is None:
        return not (index == 1 and segment in _SET_ID_FIRST)
    return index in fields


def mask_value(value: Any) -> Any:
    """Empty stays empty (its absence is not PHI); anything else becomes ``***``."""
    return MASK if value not in (None, "") else value


def mask_row(row: dict[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    """A copy of *row* with *columns* masked."""
    out = dict(row)
    for col in columns:
        if col in out:
            out[col] = mask_value(out[col])
    return out
