"""The DICOM UID grammar (PS3.5 §9.1), one pure function shared by every edge and mapping.

It lives in ``mappings/`` because both of its users may import it from here: the DICOM edge
(``channels.dicom.rules``, re-exported there for the Part-10 checks) and the HL7 orders mapping
(a Study Instance UID from ZDS-1 or IPC-3), which must not import ``channels``; ``engine/``
knows no protocol. One rule, one place: a copy would have to be kept in step by hand.
"""

from __future__ import annotations

UID_MAX_CHARS = 64


def uid_problem(uid: str) -> str | None:
    """What makes *uid* break the DICOM UID grammar, or None when it is valid.

    Digits and dots, no empty component, no leading zero in a multi-digit component, at
    most 64 characters. The answer names the rule broken, never the UID.
    """
    if not uid:
        return "empty"
    if len(uid) > UID_MAX_CHARS:
        return f"over {UID_MAX_CHARS} characters"
    if not all(c in "0123456789." for c in uid):
        return "not digits and dots"
    components = uid.split(".")
    if any(not c for c in components):
        return "empty component"
    if any(len(c) > 1 and c[0] == "0" for c in components):
        return "leading zero"
    return None
